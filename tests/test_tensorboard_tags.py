"""Every TensorBoard tag that the README or a command's --help names is one a run writes: read
back from a run's events. Before: --compare-every's help named grad/manual_vs_autograd, a tag
renamed long ago."""

import argparse
import fnmatch
import re
from pathlib import Path

from echo_rnn.cli import build_parser
from echo_rnn.engine.train import train
from helpers import events, small_config

README = Path(__file__).resolve().parents[1] / "README.md"
# First components of README spans that are paths, not tags: the package's and the repo's
# directories, a run's own, and a trial named by its path under a logdir.
PATHS = {"echo_rnn", "tests", "scripts", "examples", "docs", "runs", "checkpoints", "capacity"}
# The README's TensorBoard table: a row per dashboard, whose backticked names are tags.
TABLE_ROWS = ("| Scalars |", "| Images |", "| Histograms |")


def _tag_like(text: str) -> bool:
    """GROUP/NAME with a lower-case group that is not a path: a tag, or a stale one."""
    head, slash, rest = text.partition("/")
    return (
        bool(slash)
        and re.fullmatch(r"[a-z][a-z_-]*", head) is not None
        and head not in PATHS
        and "." not in rest
        and not rest.isupper()
    )


def readme_tags(text: str) -> set[str]:
    spans = set(re.findall(r"`([^`\n]+)`", text)) | set(re.findall(r'"([^"\n]+)"', text))
    named = {s for s in spans if _tag_like(s)}
    for line in text.splitlines():
        if line.startswith(TABLE_ROWS):  # bare names too (solved), but no flags or runs
            named |= {
                s
                for s in re.findall(r"`([^`]+)`", line)
                if not s.startswith("-") and not s.startswith("RUN")
            }
    return named


def _help_strings(parser: argparse.ArgumentParser):
    yield from (parser.description or "", parser.epilog or "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _help_strings(sub)
        elif action.help and action.help is not argparse.SUPPRESS:
            yield action.help


def help_tags(parser: argparse.ArgumentParser) -> set[str]:
    """Quoted names in help about TensorBoard, and anything GROUP/NAME-like in any help."""
    named = set()
    for text in _help_strings(parser):
        text = " ".join(text.split())  # as written, not as wrapped
        # a quote that opens after a word is an apostrophe (TensorBoard's)
        quoted = set(re.findall(r"(?<!\w)'([^'\s][^']*)'(?!\w)", text))
        named |= {q for q in quoted if _tag_like(q) or "TensorBoard" in text}
        named |= {
            w
            for w in re.findall(r"(?<![\w/'.-])[a-z][a-z_]*/[a-z_]+(?![\w/.'])", text)
            if _tag_like(w)
        }
    return named


def written_tags(tmp_path) -> set[str]:
    """Every tag of a run that writes every kind: bias, a curriculum, a schedule."""
    run = train(
        small_config(
            tmp_path, run_name="all", bias=True, curriculum=True, lr_halve_every=10, steps=20
        ),
        verbose=False,
    )
    tags = events(run.run_dir).Tags()
    written = {t for kind in ("scalars", "images", "histograms") for t in tags[kind]}
    return written | {t.removesuffix("/text_summary") for t in tags["tensors"]}


def missing(named: set[str], written: set[str]) -> list[str]:
    return sorted(n for n in named if not fnmatch.filter(written, n))


def test_every_tag_the_readme_and_help_name_is_written(tmp_path):
    written = written_tags(tmp_path)
    in_readme, in_help = readme_tags(README.read_text()), help_tags(build_parser())
    # what is checked: the names the table and the help give, not a handful that happen to
    # match (the sets are printed when this fails)
    assert {
        "loss/train",
        "accuracy/val",
        "solved",
        "held-out sequence",
        "weights/*",
        "training/kernel vs autograd (rounding units)",
    } <= in_readme, in_readme
    assert {"training/kernel vs autograd (rounding units)", "solved", "solved_step"} <= in_help
    assert missing(in_readme, written) == [], (in_readme, written)
    assert missing(in_help, written) == [], (in_help, written)


def test_a_stale_tag_is_caught():
    # the help and README text of before: each would fail the test above
    old_help = argparse.ArgumentParser()
    old_help.add_argument(
        "--compare-every",
        help="log grad/manual_vs_autograd at the first "
        "evaluation after step 0, then every N evaluations",
    )
    assert help_tags(old_help) == {"grad/manual_vs_autograd"}
    old_table = (
        "| Scalars | `loss` (`RUN/train`: the mean), `accuracy` (`RUN/val`), `--log-every` |"
    )
    assert readme_tags(old_table) == {"loss", "accuracy"}
    written = {"loss/train", "accuracy/val", "training/lr"}
    assert missing({"grad/manual_vs_autograd", "loss", "accuracy", "training/*"}, written) == [
        "accuracy",
        "grad/manual_vs_autograd",
        "loss",
    ]
