"""The README and the docs as a reader meets them: every link leads to a file and heading that
exist, every training command shown in a code block composes as `python -m train --cfg job`
would, and (slow tier) the site builds with MkDocs --strict, its reference generated."""

import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from train import config
from train.config import cmdline, schema
from train.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
GENERATED = {ROOT / "docs" / "reference" / "config.md", ROOT / "docs" / "reference" / "commands.md"}
PREFIXES = ("python -m train ", "docker compose run --rm train ")


def blocks(text: str):
    """(language, body) of each fenced code block, and the prose outside them as language None."""
    lang, body, prose = None, [], []
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence and lang is None:
            lang, body = fence[1] or "text", []
        elif fence:
            yield lang, "\n".join(body)
            lang = None
        elif lang is None:
            prose.append(line)
        else:
            body.append(line)
    yield None, "\n".join(prose)


def training_commands(text: str) -> list[list[str]]:
    """The arguments of each `python -m train ...` (or `docker compose run --rm train ...`, the
    same entrypoint) in the shell blocks, as the shell splits them."""
    found = []
    for lang, body in blocks(text):
        if lang not in SHELLS:
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = line.strip().removeprefix("$ ")
            prefix = next((p for p in PREFIXES if line.startswith(p)), None)
            args = shlex.split(line[len(prefix) :], comments=True) if prefix else []
            if args and args[0] not in ("python", "bash", "sh", "torchrun"):
                found.append(args)
    return found


def composes(args: list[str]) -> None:
    """What `python -m train --cfg job <args>` checks: our command line check, then Hydra's
    composition against the typed schema. A sweep (-m): every value of each swept key, the
    other keys at their first."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = [a for a in args if a.startswith("-")]
    given = [a for a in args if not a.startswith("-") and a != "job"]
    cmdline.check(given, schema.Config, Path(config.CONF_DIR) / "config.yaml")
    if {"--help", "-h"} & set(flags):
        return
    parsed = OverridesParser.create().parse_overrides(given)
    values = [list(p.sweep_string_iterator()) if p.is_sweep_override() else [p.value()]
              for p in parsed]  # fmt: skip
    jobs = [[0] * len(given)] + [
        [0] * i + [k] + [0] * (len(given) - i - 1)
        for i, vs in enumerate(values)
        for k in range(1, len(vs))
    ]
    for job in jobs:
        job_args = [text if not p.is_sweep_override() else f"{p.get_key_element()}={vs[k]}"
                    for text, p, vs, k in zip(given, parsed, values, job, strict=True)]  # fmt: skip
        config.compose(job_args, hydra=any(a.startswith("hydra") for a in job_args))


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (MkDocs's default) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(page: Path) -> set[str]:
    prose = "\n".join(body for lang, body in blocks(page.read_text()) if lang is None)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+?)\s*$", prose, re.M)}


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` (outside code) whose file or heading does not exist."""
    bad = []
    prose = "\n".join(body for lang, body in blocks(page.read_text()) if lang is None)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # (http, https, mailto: not followed here)
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if file in GENERATED:
            continue  # (made at build time: the build test reads them)
        if not file.exists():
            bad.append(f"{page.name}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{page.name}: {target} (no such heading)")
    return bad


def test_every_training_command_in_the_readme_and_docs_composes():
    shown = [(page, args) for page in PAGES for args in training_commands(page.read_text())]
    assert len(shown) >= 40, "the docs' commands were not found"
    failed = []
    for page, args in shown:
        try:
            composes(args)
        except (UserError, Exception) as e:  # (a UserError is a SystemExit)
            failed.append(f"{page.relative_to(ROOT)}: python -m train {shlex.join(args)}: {e}")
    assert not failed, "\n".join(failed)


def test_a_command_that_no_longer_composes_fails_the_check():
    for doc in ["```bash\npython -m train modle=cnn\n```",
                "```bash\npython -m train -m trainer.max_epochs=5,abc\n```",
                "```bash\ndocker compose run --rm train data.path=집값.csv\n```"]:  # fmt: skip
        (args,) = training_commands(doc)
        with pytest.raises((SystemExit, Exception)):  # (ours, or Hydra's)
            composes(args)


def test_every_link_in_the_readme_and_docs_leads_to_a_file_and_heading():
    bad = [b for page in PAGES for b in broken_links(page)]
    assert not bad, "\n".join(bad)


def test_a_broken_link_or_heading_fails_the_check(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## Two words `code`\n")
    page.write_text("[a](there.md#two-words-code) [b](gone.md) [c](there.md#nowhere) `[d](x.md)`")
    assert broken_links(page) == ["page.md: gone.md (no such file)",
                                  "page.md: there.md#nowhere (no such heading)"]  # fmt: skip


def test_the_readme_fits_on_a_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


@pytest.mark.slow
def test_the_site_builds_strictly_with_its_generated_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs group (uv sync installs it; the images not)")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    for key in ["trainer.max_epochs", "data.augment", "model.arch", "optim.backbone_lr_scale"]:
        assert key in reference, key
    assert "<code>100</code>" in reference.split("trainer.max_epochs", 1)[1][:400]  # the YAML's
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text()
    for module in ["train", "train.tune", "train.evaluate", "train.doctor", "train.launch"]:
        assert f"python -m {module}</code>" in commands, module
    assert {p.relative_to(ROOT / "docs").as_posix() for p in GENERATED} == set(hooks().GENERATED)


def hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_answers_help_and_a_sweeps_cfg_is_refused_in_a_paragraph(cli):
    for module in hooks().commands():
        done = cli("--help", module=module)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (module, done.stderr)
        said = "usage: " if module == "train.launch" else f"python -m {module}"  # (torchrun's)
        assert said in done.stdout and "powered by Hydra" not in done.stdout, done.stdout[:800]
    done = cli("data=digits", "optim=sgd,adam", flags=("-m", "--cfg", "job"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.stderr.startswith("error: --cfg prints one run's config"), done.stderr
