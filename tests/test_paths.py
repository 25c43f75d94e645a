import pytest

from opendistro.errors import UnsafePathError
from opendistro.paths import RESERVED_NAMES, validate_component, validate_path


@pytest.mark.parametrize(
    "name",
    ["readme.txt", "a b", ".hidden", "...", "ünïcode", "con_table", "COM10", "Episode 1: Pilot"],
)
def test_ordinary_names_pass(name: str) -> None:
    assert validate_component(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "/etc",
        "a\\b",
        "nul\x00byte",
        "C:",
        "c:evil",
        "CON",
        "con",
        "nul.txt",
        "Aux.tar.gz",
        "COM1",
        "lpt9.log",
        "PRN ",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        validate_component(name)


def test_reserved_names_cover_devices() -> None:
    assert {"CON", "PRN", "AUX", "NUL", "COM1", "COM9", "LPT1", "LPT9"} <= RESERVED_NAMES


def test_validate_path_returns_tuple_and_checks_each_component() -> None:
    assert validate_path(["dir", "file.bin"]) == ("dir", "file.bin")
    with pytest.raises(UnsafePathError):
        validate_path(["dir", "..", "etc"])
    with pytest.raises(UnsafePathError):
        validate_path([])
    with pytest.raises(UnsafePathError):
        validate_path("dir/file")


@pytest.mark.parametrize("name", [b"bytes.txt", 7, None])
def test_components_that_are_not_text_are_refused(name: object) -> None:
    with pytest.raises(UnsafePathError, match="not text"):
        validate_component(name)  # type: ignore[arg-type]
    with pytest.raises(UnsafePathError, match="not text"):
        validate_path(["dir", name])  # type: ignore[list-item]
