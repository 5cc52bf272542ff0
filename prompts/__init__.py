"""Default prompt templates, one plain file each, shipped as package data."""
from importlib import resources


def default_prompt(name: str) -> str:
    """The shipped body of prompt `name` (the file prompts/<name>.txt)."""
    return resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def default_prompt_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))
