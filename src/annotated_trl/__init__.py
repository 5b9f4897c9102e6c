"""Annotated TRL."""

# The environment of every offline run (the tests, the lab, the benchmarks): nothing may come
# from the Hub, and the libraries keep quiet about it.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
