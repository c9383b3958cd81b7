import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"


@pytest.fixture
def ml100k_path() -> Path:
    if not ML100K.is_file():
        pytest.skip(f"MovieLens-100K sample not found at {ML100K} (see shared/data/ml-100k/README.md)")
    return ML100K


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_cli(main, argv, capsys):
    """Call a CLI main(argv); return (exit status, stdout, stderr)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
