"""The ``lightning-papers`` console script.

``fit | validate | test | predict`` go to LightningCLI (subclass mode: any LightningModule / LightningDataModule
by class path; our short names resolve). Every other subcommand is a plain typed function listed in
:data:`SUBCOMMANDS`; its arguments come from the function's signature, from the command line or a YAML
``--config``. Adding a subcommand is one line in that table.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable

from lightning_papers import __version__

__all__ = ["SUBCOMMANDS", "TRAINER_SUBCOMMANDS", "console_main", "main", "run_function", "run_lightning_cli"]

#: Subcommands handled by LightningCLI, with their help lines.
TRAINER_SUBCOMMANDS: dict[str, str] = {
    "fit": "Train a LightningModule on a LightningDataModule (LightningCLI, YAML via --config).",
    "validate": "Run one validation epoch (LightningCLI).",
    "test": "Run one test epoch (LightningCLI).",
    "predict": "Run prediction (LightningCLI).",
}

#: Non-Trainer jobs: subcommand -> ("module:function", one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "quantize": ("lightning_papers.spikellm.commands:quantize", "SpikeLLM: quantize a causal LM and report perplexity."),
    "search-loss": ("lightning_papers.taylor_loss.commands:search_loss", "Taylor loss: CMA-ES search for a robust loss."),
    "meta-train": ("lightning_papers.metamd.commands:meta_train", "MetaMD: meta-learn a mirror map (Bregman divergence)."),
    "fe-adapter-folds": ("lightning_papers.fe_adapter.folds:cross_validate", "FE-Adapter: fit + test every fold, mean ± std UAR/WAR."),
    "prepare-data": ("lightning_papers.heurimentor.shards:prepare_data", "HeuriMentor: tokenize text/JSONL files into on-disk token shards."),
    "bench": ("lightning_papers.bench:bench", "Run benchmarks: `bench <method>|all [--quick]`, tables to benchmarks/results/."),
}

#: Packages imported before LightningCLI parses, so short class names (``DigitsDataModule``) resolve.
LIGHTNING_PACKAGES: tuple[str, ...] = (
    "lightning_papers.data",
    "lightning_papers.models",
    "lightning_papers.concrete_kmeans",
    "lightning_papers.taylor_loss",
    "lightning_papers.metamd",
    "lightning_papers.fe_adapter",
    "lightning_papers.spikellm",
    "lightning_papers.heurimentor",
)

DEBUG_ENV = "LIGHTNING_PAPERS_DEBUG"


def _usage() -> str:
    width = max(map(len, [*TRAINER_SUBCOMMANDS, *SUBCOMMANDS]))
    lines = [
        f"lightning-papers {__version__}: six research methods as PyTorch Lightning artifacts.",
        "",
        "usage: lightning-papers <subcommand> [--config FILE.yaml] [options]",
        "       lightning-papers <subcommand> --help",
        "",
        "subcommands:",
    ]
    for name, text in [*TRAINER_SUBCOMMANDS.items(), *((k, v[1]) for k, v in SUBCOMMANDS.items())]:
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)


def _import_packages() -> None:
    for name in LIGHTNING_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency inside the package: say so
                warnings.warn(f"could not import {name}: {err}", stacklevel=2)


def _resolve(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_lightning_cli(args: list[str] | None):
    """Run LightningCLI in subclass mode for model and data on ``args`` (``[subcommand, ...]``; None: sys.argv).

    The resolved config is saved as ``config.yaml`` in the logger's run folder (a new version folder per run),
    and not at all when the run has no logger: nothing is written into the current directory and no file is
    ever overwritten. Returns the ``LightningCLI`` object (its ``trainer``, ``model`` and ``datamodule``).
    """
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    class SaveConfigToRunFolder(SaveConfigCallback):
        """Save the config beside the logger's files; a run without a logger saves none."""

        def setup(self, trainer, pl_module, stage: str) -> None:
            if trainer.logger is None:
                return
            super().setup(trainer, pl_module, stage)

    _import_packages()
    return LightningCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToRunFolder,
        parser_kwargs={"exit_on_error": False},
        args=args,
    )


def _bare_bool_flags(fn: Callable, args: list[str]) -> list[str]:
    """Let ``--flag`` alone mean ``--flag true`` for the function's bool parameters."""
    import typing

    hints = typing.get_type_hints(fn)
    flags = {f"--{k}" for k, v in hints.items() if v is bool}
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg in flags and (nxt is None or nxt.startswith("-")):
            out.append("true")
    return out


def clean_error(err: BaseException) -> str:
    """One readable line from a (possibly nested jsonargparse) error: the innermost real causes."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    causes: list[str] = []
    for ln in lines[1:]:
        if ln.startswith("- "):
            causes.append(ln[2:].strip())
        elif causes and not ln.startswith(("Given value", "Subtypes:", "Errors:", "Does not validate")):
            causes[-1] += " " + ln
    causes = [c for c in causes if "Expected a <class 'NoneType'>" not in c]
    given = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
    got = f" (got {given!r})" if given is not None else ""
    head = lines[0]
    if not causes:
        return head + got
    key = head.split(":")[0] + ": " if head.startswith("Parser key") else ""
    return key + "; ".join(causes) + got


def run_function(name: str, args: list[str]):
    """Parse ``args`` for the function behind subcommand ``name`` (CLI flags and/or ``--config``) and call it."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    fn = _resolve(SUBCOMMANDS[name][0])
    doc = (fn.__doc__ or SUBCOMMANDS[name][1]).strip().split("\n\n")[0]
    parser = ArgumentParser(prog=f"lightning-papers {name}", description=doc, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the arguments below.")
    parser.add_function_arguments(fn, as_positional=True, fail_untyped=False)
    cfg = parser.parse_args(_bare_bool_flags(fn, args))
    # ``instantiate`` replaced ``instantiate_classes`` in jsonargparse 4.49; older versions only have the latter
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    init = instantiate(cfg).as_dict()
    init.pop("config", None)
    return fn(**init)


def main(args: list[str] | None = None):
    """Run the ``lightning-papers`` command line on ``args`` (default ``sys.argv[1:]``) and return its result.

    Returns the ``LightningCLI`` object for ``fit | validate | test | predict``, the subcommand function's
    return value otherwise, and None for ``--help`` / ``--version``. Errors in user input end with one clear
    ``error:`` line and exit status 2 (set ``LIGHTNING_PAPERS_DEBUG=1`` for the full traceback).

    Example::

        >>> main(["--help"])  # doctest: +ELLIPSIS
        lightning-papers ...
    """
    from_argv = args is None
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return None
    if args[0] in ("-V", "--version"):
        print(__version__)
        return None
    command, rest = args[0], args[1:]
    if command not in TRAINER_SUBCOMMANDS and command not in SUBCOMMANDS:
        choices = ", ".join([*TRAINER_SUBCOMMANDS, *SUBCOMMANDS])
        print(f"error: unknown subcommand {command!r}; expected one of: {choices}", file=sys.stderr)
        raise SystemExit(2)
    try:
        if command in TRAINER_SUBCOMMANDS:
            return run_lightning_cli(None if from_argv else args)
        result = run_function(command, rest)
        if result is not None:
            print(result)
        return result
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as err:
        if os.environ.get(DEBUG_ENV):
            raise
        kind = "" if type(err).__name__ == "ArgumentError" else f"{type(err).__name__}: "
        print(f"error: {kind}{clean_error(err)}", file=sys.stderr)
        print(f"(set {DEBUG_ENV}=1 to see the full traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def console_main() -> None:
    """The console script: :func:`main` on ``sys.argv``, exit status 0 unless an error was raised."""
    main()


if __name__ == "__main__":
    console_main()
