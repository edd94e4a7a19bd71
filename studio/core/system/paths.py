"""Where Finetune Studio keeps its files: one per-user data folder, overridable for tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs


def hf_cache_dir() -> Path:
    """The Hub cache folder, read from the environment now (HF_HUB_CACHE, then HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_ENDINGS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".tab", ".parquet", ".pq", ".txt", ".md", ".toml",
                 ".safetensors", ".bin", ".gguf", ".zip")
"""Name endings that make `books/moby-dick.txt` or `models/x.gguf` a missing file, not a Hub repository."""


def safe_name(text: str, fallback: str) -> str:
    """`text` as a file or folder name on every system (a run, a user preset, an export check): each run of
    characters other than letters, digits, '.', '_' and '-' becomes one '-', none left at either end; `fallback`
    when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or fallback


def looks_like_hub_id(text: str) -> bool:
    """The one rule for "a Hub id, not a path", for models and datasets alike: `org/name` (one slash, no
    leading `/`, `./`, `../` or `~`), not ending like a file name, and nothing at that path on this machine.

    Anything else that does not exist is a missing local path, so a typo in a folder name is told as one instead
    of becoming a Hub download that fails (or, offline, a connection error)."""
    text = str(text).strip()
    return (bool(_HUB_ID.match(text)) and not text.lower().endswith(_FILE_ENDINGS)
            and not Path(text).expanduser().exists())


def hub_id_of(name_or_path: str) -> str:
    """The Hub id a model came from: itself for an id, 'org/name' for a snapshot folder of the HF cache
    (`…/models--org--name/snapshots/<revision>`), else the path as given (a model of the user's own)."""
    parts = Path(name_or_path).parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots" and "--" in part[len("models--"):]:
            return part[len("models--"):].replace("--", "/", 1)
    return name_or_path


APP_NAME = "finetune-studio"
HOME_ENV_VAR = "FINETUNE_STUDIO_HOME"
"""When set, this folder replaces the platform's user data folder (tests point it at a tmp dir)."""


def user_data_dir() -> Path:
    """The per-user data folder: `$FINETUNE_STUDIO_HOME` if set, else the platformdirs location."""
    override = os.environ.get(HOME_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resource_path(*parts: str) -> Path:
    """A file or folder shipped in the repository's `resources/` (demo sources, model shapes, icons).

    An installed wheel carries it as `studio/_resources` (pyproject's package-dir); a source checkout or an
    editable install reads `resources/` beside `studio/`. The wheel's copy is looked for first, because
    beside an installed `studio/` lies site-packages, where some other package may have a `resources/`.
    """
    package_dir = Path(__file__).resolve().parents[2]
    for root in (package_dir / "_resources", package_dir.parent / "resources"):
        if (root / "demo").is_dir():
            return root.joinpath(*parts)
    raise FileNotFoundError(f"{package_dir}: the studio's resources folder is missing; reinstall Finetune Studio")


def runs_dir() -> Path:
    """The folder holding one sub-folder per training run."""
    return user_data_dir() / "runs"


DOCUMENTS = {"README.md": "#readme", "docs/CONFIG.md": "/blob/main/docs/CONFIG.md"}
"""The user documentation: a file of the source tree, and where the project's homepage shows it."""


def document_location(name: str) -> Path | str:
    """Where to read one of DOCUMENTS: the source tree's file, else (an installed wheel carries no docs) its
    page on the project's homepage."""
    root = Path(__file__).resolve().parents[3]
    # The checks tell a checkout from site-packages, where any package may have left a README.md.
    if (root / "pyproject.toml").is_file() and (root / "studio" / "core").is_dir() and (root / name).is_file():
        return root / name
    return project_homepage() + DOCUMENTS[name]


def project_homepage() -> str:
    """The Homepage of the installed package's metadata (pyproject's [project.urls])."""
    from importlib import metadata

    try:
        for entry in metadata.metadata("finetune-studio").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() == "homepage":
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    return "https://github.com/finetune-studio/finetune-studio"
