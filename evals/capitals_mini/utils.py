"""Dataset loader for the capitals_mini lm-eval task: the JSONL file beside this module."""

from pathlib import Path


def load_capitals(**_kwargs):
    import datasets  # lm-eval's own dependency; imported only when the task runs

    path = Path(__file__).with_name("capitals.jsonl")
    return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(path), split="train")})
