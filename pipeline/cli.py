"""Command line: ``python -m pipeline COMMAND`` or the ``pipeline`` console script.

Commands: train, index, evaluate, run, search, collapse-experiment. Every command
reads one YAML config (``--config``), and a few flags override single settings.
Known errors (an invalid config, missing data, a missing model or collection) print
one message and exit with status 2. An interrupted command prints one message and
exits with status 130. Anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

DEFAULT_CONFIG = "configs/wordnet.yaml"


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr so that `search --json` prints only JSON on stdout.
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    for noisy in ("httpx", "sentence_transformers", "pytorch_lightning.utilities.rank_zero", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        from loguru import logger as loguru_logger  # Quaterion logs through loguru

        loguru_logger.remove()
        loguru_logger.add(sys.stderr, level="DEBUG" if verbose else "WARNING")
    except ImportError:
        pass


def _overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    if getattr(args, "qdrant_url", None):
        overrides.setdefault("qdrant", {})["url"] = args.qdrant_url
    if getattr(args, "output_dir", None):
        overrides["output_dir"] = args.output_dir
    if getattr(args, "epochs", None):
        overrides.setdefault("training", {})["epochs"] = args.epochs
    return overrides


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="Fine-tune a text encoder for similarity search, "
                                     "index it in Qdrant and measure retrieval.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, config_required: bool = False) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--config", default=None if config_required else DEFAULT_CONFIG,
                             required=config_required, help=f"YAML config file (default: {DEFAULT_CONFIG})")
        command.add_argument("--output-dir", help="directory for run directories (overrides output_dir)")
        command.add_argument("--qdrant-url", help="Qdrant server URL, e.g. http://localhost:6333 "
                             "(overrides qdrant.url; the API key comes from $QDRANT_API_KEY)")
        return command

    train = add("train", "Fine-tune the model and save it in the run directory.")
    train.add_argument("--resume", action="store_true", help="continue from checkpoints/last.ckpt if it exists")
    train.add_argument("--epochs", type=_positive_int, help="number of epochs (overrides training.epochs)")

    index = add("index", "Embed the corpus and upload it to Qdrant.")
    index.add_argument("--model", type=Path, help="run directory of a trained model (default: the pretrained encoder)")
    index.add_argument("--recreate", action="store_true", help="drop and rebuild the collection if it exists")
    index.add_argument("--collection", help="collection name (default: <qdrant.collection>_baseline or _finetuned)")

    evaluate = commands.add_parser("evaluate", help="Re-evaluate an existing run against the pretrained baseline.")
    evaluate.add_argument("--model", type=Path, required=True, help="run directory, e.g. runs/wordnet")
    evaluate.add_argument("--config", help="config file (default: the run's config.yaml)")
    evaluate.add_argument("--qdrant-url", help="Qdrant server URL (overrides qdrant.url)")

    run = add("run", "Main job: train, index baseline and fine-tuned, evaluate, write the report.")
    run.add_argument("--resume", action="store_true", help="continue training from the last checkpoint")
    run.add_argument("--epochs", type=_positive_int, help="number of epochs (overrides training.epochs)")

    search = add("search", "Search the collection for the items nearest to a text.")
    search.add_argument("query", help="the text to search for")
    search.add_argument("--k", type=_positive_int, default=5, help="number of results, at least 1 (default: 5)")
    search.add_argument("--model", type=Path, help="run directory whose model and collection to use "
                        "(default: the pretrained encoder and the baseline collection)")
    search.add_argument("--collection", help="collection name (default: <qdrant.collection>_baseline or _finetuned)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")

    experiment = add("collapse-experiment", "Train the plain and the scaled triplet loss from the same start "
                     "and compare their collapse.")
    experiment.add_argument("--epochs", type=_positive_int, help="number of epochs (overrides training.epochs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)

    from pipeline.config import ConfigError, load_config
    from pipeline.data import DataError
    from pipeline.evaluate import EvaluationError
    from pipeline.index import CollectionError
    from pipeline.model import ModelError
    from pipeline.sampler import SamplerError
    from pipeline.train import TrainingInterrupted

    try:
        return _dispatch(args, load_config)
    except (ConfigError, DataError, ModelError, CollectionError, EvaluationError, SamplerError,
            FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted; outputs of this command may be incomplete", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, load_config) -> int:
    from rich.console import Console

    from pipeline import run as jobs

    console = Console()
    if args.command == "evaluate":
        run_dir = Path(args.model)
        if not (run_dir / "servable" / "config.json").is_file():
            raise FileNotFoundError(
                f"{run_dir} is not a run directory (no servable/ inside). Pass the directory that "
                "'pipeline run' or 'pipeline train' created, e.g. runs/wordnet.")
        config_path = args.config or run_dir / "config.yaml"
        config = load_config(config_path, _overrides(args))
        document = jobs.evaluate_run(config, run_dir)
        console.print(jobs.print_table(document))
        return 0

    config = load_config(args.config, _overrides(args))
    if args.command == "train":
        from pipeline.train import train

        split = jobs.prepare_split(config)
        result = train(config, split.train, split.validation, resume=args.resume)
        console.print(f"Model saved to {result.servable_dir}")
        return 0
    if args.command == "index":
        report = jobs.index_corpus(config, args.model, recreate=args.recreate, collection=args.collection)
        console.print_json(json.dumps(report))
        return 0
    if args.command == "run":
        document = jobs.run_main_job(config, resume=args.resume)
        console.print(f"\nRun directory: {config.run_dir()}\n")
        console.print(jobs.print_table(document), markup=False)
        return 0
    if args.command == "search":
        hits = jobs.search(config, args.query, args.k, args.model, args.collection)
        _print_hits(console, hits, args.json)
        return 0
    if args.command == "collapse-experiment":
        from pipeline.experiment import run_collapse_experiment

        summary_path = run_collapse_experiment(config)
        console.print(f"Summary written to {summary_path}")
        console.print(summary_path.read_text(), markup=False)
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _print_hits(console, hits, as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"id": hit.id, "score": hit.score, "payload": hit.payload} for hit in hits], indent=2))
        return
    from rich.table import Table

    table = Table("rank", "score", "text", "group", "kind", "split")
    for rank, hit in enumerate(hits, start=1):
        payload = hit.payload
        table.add_row(str(rank), f"{hit.score:.4f}", payload.get("text", ""), payload.get("group", ""),
                      payload.get("kind", ""), payload.get("split", ""))
    console.print(table)
