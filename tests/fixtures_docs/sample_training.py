#!/usr/bin/env python
# /// script
# dependencies = ["trl"]
# ///
"""Sample training script

Used only by the splitter's unit tests: it trains nothing.
"""

import math

# ## Step one
#
# The loss is $\ell = -\log p$, and over a batch
#
# $$
# \mathcal{L} = \frac{1}{N} \sum_i \ell_i
# $$


def loss(p):
    # an indented comment stays in the code
    return -math.log(p)  # so does a trailing one


TEMPLATE = """
# not a comment: this line is inside a string
"""
#
# A bare "#" above is a paragraph break.

# Two runs separated by a blank line are one block.
print(loss(0.5), "`" * 3)
