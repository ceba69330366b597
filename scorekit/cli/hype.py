"""`scorekit hype create | serve | raters | report | export`: human real-vs-fake studies (HYPE_inf)."""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
from pathlib import Path

from ..errors import ScorekitError
from .args import DEVICE_HELP, NO_EMA_HELP, SEED, Number, device, existing_path, real
from .guiding import guidance_kwargs
from .running import add_sampler_args, sampler_options

PER_RATER_DEFAULT, N_DEFAULT = 100, 2000


def cmd_create(args: argparse.Namespace) -> int:
    """Make a study: N fakes (sampled from RUN now, or the first N of SAMPLES.npz) and N reals drawn at random
    from DATA, written as PNGs under opaque ids, with the protocol, the truth and --raters rater tokens in a
    SQLite database (WAL). Each rater sees a tutorial of --tutorial images with feedback, then --per-rater
    images, half real and half fake. Nothing is written unless every input is valid."""
    import numpy as np
    import torch

    from ..data.resolve import data_config
    from ..data.sources import build_source
    from ..hype.study import create_study

    for name, value in (("--per-rater", args.per_rater), ("--tutorial", args.tutorial)):
        if value % 2:
            raise ScorekitError(f"{name} {value}: must be even (half real, half fake)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ScorekitError(f"--out {out}: exists and is not an empty folder (a study is never overwritten)")
    src = Path(args.source)
    half_t = args.tutorial // 2
    n_fake = args.n_fake
    if src.suffix == ".npz":
        if args.klass is not None:
            raise ScorekitError("--class: needs a run to sample from (the samples of SAMPLES.npz are drawn already)")
        with np.load(src, allow_pickle=False) as f:
            if "samples" not in f or f["samples"].dtype != np.uint8 or f["samples"].ndim != 4:
                raise ScorekitError(f"{src}: expected an array 'samples' (uint8, NHWC)")
            samples = f["samples"]
        if len(samples) < n_fake + half_t:
            raise ScorekitError(f"{src}: holds {len(samples)} samples; --n-fake {n_fake} and the tutorial need "
                                f"{n_fake + half_t}")
        shape = (samples.shape[3], samples.shape[1], samples.shape[2])
        info = {"samples": str(src)}
        denoiser = None
    else:
        from ..run import load

        denoiser = load(src, ema=not args.no_ema, device=args.device or ("cuda" if torch.cuda.is_available() else
                                                                          "cpu"))
        shape = denoiser.image_shape
        sampler = args.sampler or denoiser.config.sampling.sampler
        from .running import check_sampler, searched_schedule

        check_sampler(denoiser, sampler, args.steps, args.schedule)
        args.schedule = searched_schedule(args, denoiser, sampler)
        guided = guidance_kwargs(args, denoiser, n_fake + half_t)
        info = {"run": str(src), "checkpoint_step": denoiser.checkpoint_step, "ema": denoiser.uses_ema,
                "sampler": sampler, "steps": args.steps or denoiser.config.sampling.steps or "sampler default",
                "sample_seed": args.seed}
    data = data_config(args.data, resolution=shape[1], channels=shape[0])
    source = build_source(data, args.split)
    n_real = args.n_real if args.n_real else min(n_fake, len(source) - half_t)  # a balanced pool by default
    if n_real + half_t > len(source):
        raise ScorekitError(f"--n-real {n_real}: {args.data} ({args.split}) holds {len(source)} images, of which "
                            f"{half_t} go to the tutorial; use --n-real {len(source) - half_t} or fewer")
    for kind, n in (("fake", n_fake), ("real", n_real)):
        if n < args.per_rater // 2:
            raise ScorekitError(f"--per-rater {args.per_rater}: needs {args.per_rater // 2} {kind} images, the study "
                                f"has {n}")
    if denoiser is not None:
        from ..evaluation.generate import generate

        fakes = generate(denoiser, n_fake + half_t, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler,
                         options=sampler_options(args), progress=not args.no_progress, raw=args.raw, **guided)
    else:
        fakes = torch.from_numpy(samples[:n_fake + half_t]).permute(0, 3, 1, 2).contiguous()
    order = np.random.RandomState(args.seed).permutation(len(source))[:n_real + half_t]
    reals = torch.stack([source[int(i)] for i in order])
    if tuple(reals.shape[1:]) != tuple(fakes.shape[1:]):
        raise ScorekitError(f"--data {args.data}: images are {tuple(reals.shape[1:])}, the samples "
                            f"{tuple(fakes.shape[1:])}")
    info.update(data=args.data, real_split=args.split, real_indices_seed=args.seed)
    create_study(out, fakes, reals, tutorial=args.tutorial, per_rater=args.per_rater, seed=args.seed,
                 n_raters=args.raters, info=info, fake_sources=[f"sample {i}" for i in range(len(fakes))],
                 real_sources=[f"{data.dataset} {args.split} {int(i)}" for i in order])
    print(f"study with {n_fake} fakes and {n_real} reals (+ a tutorial of {args.tutorial}) and {args.raters} rater "
          f"tokens -> {out}; next: scorekit hype serve {out}")
    return 0


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN|SAMPLES.npz", type=existing_path, help="a run (sampled now) or samples")
    p.add_argument("--data", required=True, help="where the real images come from: digits, a preset, a folder, ...")
    p.add_argument("--out", required=True, metavar="STUDY", help="the new study folder")
    p.add_argument("--n-fake", type=Number(int, 2, 1_000_000), default=N_DEFAULT, help="fake images (default 2000)")
    p.add_argument("--n-real", type=Number(int, 0, 1_000_000, zero_means="as many as --n-fake"), default=0,
                   help="real images (default: as many as --n-fake, or the whole split if smaller)")
    p.add_argument("--per-rater", type=Number(int, 2, 100_000), default=PER_RATER_DEFAULT,
                   help="images each rater judges, half real and half fake (default 100)")
    p.add_argument("--tutorial", type=Number(int, 0, 1000), default=10, help="tutorial images with feedback (10)")
    p.add_argument("--raters", type=Number(int, 0, 100_000), default=20, help="rater tokens to create (default 20)")
    p.add_argument("--split", default="train", choices=("train", "test"), help="split of DATA (default train)")
    add_sampler_args(p)
    p.add_argument("--device", type=device, help=DEVICE_HELP)
    p.add_argument("--no-ema", action="store_true", help=NO_EMA_HELP)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the study to raters: each opens http://HOST:PORT/r/TOKEN (`scorekit hype raters STUDY` lists
    the links). Every answer is committed before it is acknowledged; stop with Ctrl-C and start again at
    any time, raters continue where they were (SIGTERM stops it like Ctrl-C). Binds to localhost unless --host
    says otherwise. Each request must arrive within --timeout seconds of its connection (408 otherwise) and at
    most --max-connections are served at once, so stalled or hostile clients cannot hold it up."""
    from ..hype.server import make_server
    from ..hype.study import blinding_warning, connect, raters

    conn = connect(args.study)
    tokens = raters(conn)
    warning = blinding_warning(conn, args.study)
    conn.close()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        server = make_server(args.study, args.host, args.port, verbose=args.verbose, timeout=args.timeout,
                             max_connections=args.max_connections)
    except OSError as e:
        raise ScorekitError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    host, port = server.server_address[:2]
    print(f"serving {args.study} on http://{host}:{port}/ ({len(tokens)} raters); Ctrl-C stops", flush=True)
    for r in tokens:
        print(f"  {r['label']}: http://{host}:{port}/r/{r['token']}  ({_progress(r)})")
    sys.stdout.flush()

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a service manager's (and a test's) way of saying Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("stopped; every acknowledged answer is in the database")
    return 0


def _progress(rater: dict) -> str:
    """A rater's progress in words: answers given out of the images assigned (tutorial included)."""
    if not rater["assigned"]:
        return "not started"
    return f"{rater['answered']} of {rater['assigned']} answered"


def _serve_args(p: argparse.ArgumentParser) -> None:
    from ..hype.server import MAX_CONNECTIONS, TIMEOUT

    p.add_argument("study", metavar="STUDY", type=existing_path, help="the study folder made by `hype create`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=Number(int, 0, 65535, zero_means="any free port"), default=8000,
                   help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--timeout", type=real(0.1, 600), default=TIMEOUT, metavar="SECONDS",
                   help=f"a client must send each header line, and its whole body, within this (default {TIMEOUT:g}); "
                        "a slower one gets 408 and is closed")
    p.add_argument("--max-connections", type=Number(int, 1, 1024), default=MAX_CONNECTIONS, metavar="N",
                   help=f"connections served at once (default {MAX_CONNECTIONS}); more wait their turn")
    p.add_argument("--verbose", action="store_true", help="log every request")


def cmd_raters(args: argparse.Namespace) -> int:
    """List the rater tokens (and their progress); --add N creates N more."""
    from ..hype.study import add_raters, connect, raters

    conn = connect(args.study)
    if args.add:
        add_raters(conn, args.add)
    for r in raters(conn):
        print(f"{r['label']}\t/r/{r['token']}\t{_progress(r)}")
    conn.close()
    return 0


def _raters_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", type=existing_path, help="the study folder made by `hype create`")
    p.add_argument("--add", type=Number(int, 0, 100_000), default=0, help="create this many new rater tokens")


def cmd_report(args: argparse.Namespace) -> int:
    """HYPE_inf, the Fakes Error and the Reals Error with 95% bootstrap intervals over raters and images,
    counts per rater and per image, and the raters excluded by their tutorial accuracy. Prints a Markdown
    table (the HYPE / NCSNv2 format) and writes report.md and report.json (with the whole protocol) in
    STUDY; --json prints the JSON instead."""
    from ..hype.report import markdown, summarize
    from ..hype.study import connect, judgments, protocol
    from ..images import atomic_write_bytes

    conn = connect(args.study)
    proto, rows = protocol(conn), judgments(conn)
    conn.close()
    rep = summarize(rows, threshold=args.threshold, n_boot=args.bootstrap, seed=args.seed)
    model = args.model or Path(str(proto.get("run") or proto.get("samples", "model"))).name
    payload = {"protocol": proto, "report": rep}
    table = markdown(rep, model)
    atomic_write_bytes(Path(args.study) / "report.json", (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(Path(args.study) / "report.md", table.encode())
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    print(table, end="")
    kept = [p for p in rep["per_rater"] if not p["excluded"]]
    print(f"\n{rep['judgments']} judgments by {rep['raters']} raters ({len(rep['excluded_raters'])} excluded: "
          f"{rep['exclusion_rule']}); images judged {len(rep['per_image'])}, per rater "
          f"{min((p['judged'] for p in kept), default=0)}-{max((p['judged'] for p in kept), default=0)}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", type=existing_path, help="the study folder made by `hype create`")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--threshold", type=real(0, 1), default=0.5,
                   help="exclude raters whose tutorial accuracy is below this (default 0.5)")
    p.add_argument("--bootstrap", type=Number(int, 100, 1_000_000), default=2000, help="replicates (default 2000)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--model", help="the model's name in the table (default: the run's folder name)")


def cmd_export(args: argparse.Namespace) -> int:
    """Every answer as CSV (rater, image id, real/fake, tutorial/test, position, answer, correct, time) on
    stdout or into --out."""
    import csv
    import io

    from ..hype.study import connect, judgments
    from ..images import atomic_write_bytes

    conn = connect(args.study)
    rows = judgments(conn)
    conn.close()
    buf = io.StringIO()
    fields = ["label", "token", "image_id", "kind", "phase", "source", "position", "answer", "correct", "answered_at"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    if args.out:
        atomic_write_bytes(args.out, buf.getvalue().encode())
        print(f"{len(rows)} answers -> {args.out}")
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", type=existing_path, help="the study folder made by `hype create`")
    p.add_argument("--csv", action="store_true", required=True, help="CSV (the only format)")
    p.add_argument("--out", metavar="FILE.csv", help="default: stdout")


SUBCOMMANDS = [
    ("create", "make a study from a run or samples and real data", _create_args, cmd_create),
    ("serve", "serve the study to raters in a browser", _serve_args, cmd_serve),
    ("raters", "list or add rater tokens", _raters_args, cmd_raters),
    ("report", "HYPE_inf with bootstrap intervals", _report_args, cmd_report),
    ("export", "every answer as CSV", _export_args, cmd_export),
]


def cmd_hype(args: argparse.Namespace) -> int:
    """Human evaluation of sample quality: HYPE_inf real-vs-fake studies (Zhou et al. 2019), as the NCSNv2
    paper reports. create a study, serve it to raters in a browser, report the score."""
    return args.hype_func(args)


def _hype_args(p: argparse.ArgumentParser) -> None:
    from . import common_options

    sub = p.add_subparsers(dest="hype_command", metavar="SUBCOMMAND", required=True, parser_class=type(p))
    for name, help_text, add_args, func in SUBCOMMANDS:
        sp = sub.add_parser(name, help=help_text, description=inspect.cleandoc(func.__doc__ or help_text),
                            parents=[common_options()], formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(sp)
        sp.set_defaults(hype_func=func)


COMMANDS = [("hype", "human real-vs-fake studies (HYPE_inf) in the browser", _hype_args, cmd_hype)]
