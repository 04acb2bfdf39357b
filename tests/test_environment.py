"""pyproject.toml and environment.yml install the same packages, and course.py's helpers behave.

environment.yml is for conda/mamba users and CI cannot reach a conda channel, so this test is what
keeps it honest: a dependency added to one file only fails here.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli there
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip"}  # conda needs these listed; pip gets them from the interpreter
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_NAMES.get(name, name)


def split_requirement(requirement: str) -> tuple[str, str]:
    """'nbval >= 0.11 ; python_version<"3.11"' -> ('nbval', '>=0.11'): name and version specifier."""
    requirement = requirement.split(";")[0]
    match = NAME.match(requirement)
    assert match, f"cannot read a package name from {requirement!r}"
    rest = re.sub(r"^\[[^\]]*\]", "", requirement[match.end() :].strip())  # drop "[extras]"
    return normalise(match.group(1)), rest.replace(" ", "")


def parse_environment_yml(text: str) -> dict:
    """Just enough YAML for environment.yml: top-level scalars and lists, and the nested `- pip:` list."""
    data: dict = {}
    key = nested = None
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0:
            key, _, value = item.partition(":")
            data[key] = value.strip() or []
            nested = None
        elif item.startswith("- ") and item.endswith(":") and not item[2:].startswith("-"):
            nested = item[2:-1].strip()
            data[key].append({nested: []})
            nested_indent = indent
        elif item.startswith("- "):
            if nested is not None and indent > nested_indent:
                data[key][-1][nested].append(item[2:].strip())
            else:
                nested = None
                data[key].append(item[2:].strip())
        else:
            raise AssertionError(f"environment.yml line not understood by this test's parser: {raw!r}")
    return data


def pyproject_requirements(pyproject: dict) -> dict[str, str]:
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return dict(split_requirement(r) for r in requirements)


def conda_requirements(environment: dict) -> dict[str, str]:
    plain = [d for d in environment["dependencies"] if isinstance(d, str)]
    return {name: spec for name, spec in map(split_requirement, plain) if name not in CONDA_ONLY}


def pip_section(environment: dict) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one `- pip:` list"
    return sections[0]


def mismatches(pyproject: dict, environment: dict) -> list[str]:
    """Every way the two files disagree, in words."""
    ours, theirs = pyproject_requirements(pyproject), conda_requirements(environment)
    found = [f"{n} only in pyproject.toml" for n in sorted(set(ours) - set(theirs))]
    found += [f"{n} only in environment.yml" for n in sorted(set(theirs) - set(ours))]
    found += [
        f"{n}: pyproject.toml says {ours[n]!r}, environment.yml says {theirs[n]!r}"
        for n in sorted(set(ours) & set(theirs))
        if ours[n] != theirs[n]
    ]
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    pip = [re.sub(r"\s+", " ", p) for p in pip_section(environment)]
    editable = re.fullmatch(r"-e \.\[([^\]]*)\]", pip[0]) if len(pip) == 1 else None
    if editable is None or {e.strip() for e in editable.group(1).split(",")} != extras:
        wanted = f"-e .[{','.join(sorted(extras))}]"
        found.append(f"pip section is {pip}, expected [{wanted!r}] (every extra of pyproject.toml)")
    return found


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def environment() -> dict:
    return parse_environment_yml((ROOT / "environment.yml").read_text(encoding="utf-8"))


def test_environment_yml_matches_pyproject(pyproject, environment):
    assert mismatches(pyproject, environment) == []


def test_environment_yml_basics(pyproject, environment):
    assert environment["name"] == "miniseek"
    assert environment["channels"] == ["conda-forge"]
    python = [
        d for d in environment["dependencies"] if isinstance(d, str) and normalise(d).startswith("python")
    ]
    lowest = pyproject["project"]["requires-python"].replace(" ", "")
    assert python and lowest in python[0].replace(" ", ""), f"python in environment.yml should allow {lowest}"
    assert "pip" in environment["dependencies"]


def test_a_dependency_added_to_one_file_only_is_caught(pyproject, environment):
    import copy

    one_sided = copy.deepcopy(pyproject)
    one_sided["project"]["dependencies"].append("scipy>=1.11")
    assert mismatches(one_sided, environment) == ["scipy only in pyproject.toml"]

    other_side = copy.deepcopy(environment)
    other_side["dependencies"].insert(3, "einops")
    assert mismatches(pyproject, other_side) == ["einops only in environment.yml"]

    loosened = copy.deepcopy(environment)
    loosened["dependencies"] = [
        re.sub(r"^pytorch.*", "pytorch", d) if isinstance(d, str) else d for d in loosened["dependencies"]
    ]
    assert mismatches(pyproject, loosened) == ["torch: pyproject.toml says '>=2.2', environment.yml says ''"]

    new_extra = copy.deepcopy(pyproject)
    new_extra["project"]["optional-dependencies"]["docs"] = []
    assert mismatches(new_extra, environment)[0].startswith("pip section is")


def test_tiny_yaml_parser():
    text = (
        "name: x  # comment\nchannels:\n  - conda-forge\ndependencies:\n  - python>=3.10\n  - pip:\n"
        "      - -e .[a,b]\n  - numpy\n"
    )
    assert parse_environment_yml(text) == {
        "name": "x",
        "channels": ["conda-forge"],
        "dependencies": ["python>=3.10", {"pip": ["-e .[a,b]"]}, "numpy"],
    }
    assert split_requirement("Pytest_XDist [psutil] >= 3 ; python_version<'3.11'") == ("pytest-xdist", ">=3")
    assert split_requirement("pytorch>=2.2") == ("torch", ">=2.2")


# ---------------------------------------------------------------- course.py


@pytest.fixture(scope="module")
def course():
    spec = importlib.util.spec_from_file_location("course_cli", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_course_py_help_runs_on_the_stdlib_alone():
    # -I: isolated mode, no site-packages; the help must not need anything outside the standard library
    result = subprocess.run(
        [sys.executable, "-I", str(ROOT / "course.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "python3 course.py lab" in result.stdout and "python3 course.py test" in result.stdout


def test_course_py_recognises_pytest_summary_lines(course):
    for line in [
        "===== 3 failed, 41 passed, 2 skipped in 62.10s (0:01:02) =====",
        "============ 120 passed in 9.87s ============",
        "=== no tests ran in 0.01s ===",
    ]:
        assert course.PYTEST_SUMMARY.match(line), line
    assert not course.PYTEST_SUMMARY.match("==== FAILURES ====")
    assert not course.PYTEST_SUMMARY.match("=== short test summary info ===")


def test_course_py_path_arguments_replace_the_default_folders(course):
    assert course.names_paths(["tests/test_environment.py::test_tiny_yaml_parser"])
    assert course.names_paths(["-x", "tests"])
    assert not course.names_paths(["-k", "rope and not slow", "-x"])


def test_course_py_stamp_follows_pyproject(course, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'a'\n")
    monkeypatch.setattr(course, "ROOT", tmp_path)
    first = course.wanted_stamp()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'b'\n")
    assert course.wanted_stamp() != first
