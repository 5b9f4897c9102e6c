"""The lab: every method trained on the toy task at one budget and several seeds, and the
figures the site shows from its results (`annotated-trl lab`, `annotated-trl lab-figures`)."""
