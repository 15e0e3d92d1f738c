"""Plans: the TOML model of an experiment (methods × ratios × recovery), checked before any work."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.budget import parse_limit
from engine.errors import UserError
from engine.experiments.criteria import DEFAULT_CRITERIA, Criterion, criteria_from_toml
from engine.experiments.store import default_store_path
from engine.experiments.typed import (_expect, _key_name, _numbers, _shown, check_prune_options,
                                      check_sensitivity_options)
from engine.methods import all_methods, get_method
from engine.outputs import check_writable
from engine.sources import DataSource, ModelKind, ModelSource, split_code
from engine.config import RECOVERY, TARGET_FIELDS, PruneConfig, only_target, options
from engine.recipes import with_preset

# ----------------------------------------------------------------------------- plans

PLAN_SECTIONS = {
    "plan": {"name", "seed", "store", "out_dir", "save_models", "memory_limit", "executor", "address", "cpus_per_run",
             "gpus_per_run"},
    "model": {"source", "code", "kwargs", "weights", "trust", "input_shape", "mean", "std"},
    "data": {"spec"},
    "sweep": {"methods", "ratios", "target_speedups", "target_latencies", "target_latency_speedups",
              "sensitivity_guided"},
    # manual channels are ticked on one model in the Teach tab, not swept
    "prune": set(PruneConfig.__dataclass_fields__) - {"method", *TARGET_FIELDS, "layer_ratios", "seed",
                                                      "manual_channels"},
    "recovery": None,  # an array of tables, checked separately
    "sensitivity": {"ratios", "limit", "method", "bn_recalibrate"},
    "criteria": None,
}
# a recovery setting may also change the steps and the sparsity penalty (both shape the fine-tuning); besides
# these PruneConfig keys, `preset` starts it from a recovery preset (engine.recipes) that its keys override
RECOVERY_KEYS = {"name", "steps", "sparsity_reg", *options(RECOVERY)}


@dataclass(frozen=True)
class Recovery:
    """One recovery setting of a plan: BatchNorm re-estimation and/or fine-tuning after pruning."""

    name: str = "none"
    options: dict = field(default_factory=dict)  # PruneConfig fields

    @property
    def summary(self) -> str:
        """Words for tables: 'BN re-estimation + 50 fine-tuning batches'."""
        o = self.options
        parts = []
        if o.get("bn_recalibrate"):
            parts.append("BN re-estimation")
        if o.get("finetune_batches"):
            parts.append(f"{o['finetune_batches']} fine-tuning batches")
        elif o.get("finetune_epochs"):
            parts.append(f"{o['finetune_epochs']:g} fine-tuning epochs")
        if o.get("distill"):
            parts.append(f"distillation at T = {o['distill_temperature']:g}" if "distill_temperature" in o
                         else "distillation")
        if o.get("finetune_augment"):
            parts.append("augmentation")
        if (o.get("steps") or 1) > 1:
            parts.append(f"{o['steps']} steps")
        return " + ".join(parts) or "none"


@dataclass
class Plan:
    """Methods × ratios (or target speed-ups) × recovery settings on one model and dataset, with a seed,
    criteria, a result store and a folder for the pruned models."""

    model: str = "demo:resnet"
    data: str = "fashion-mnist"
    methods: tuple[str, ...] = ("l2",)
    ratios: tuple[float, ...] = (0.5,)
    target_speedups: tuple[float, ...] = ()
    target_latencies: tuple[float, ...] = ()  # ms on [prune] runtime at [prune] batch_size (engine.latency_target)
    target_latency_speedups: tuple[float, ...] = ()  # times faster than the original, timed paired, likewise
    recoveries: tuple[Recovery, ...] = (Recovery(),)
    prune: dict = field(default_factory=dict)  # PruneConfig fields shared by every run
    seed: int = 0
    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    name: str = "plan"
    store: str | None = None
    out_dir: str | None = None
    save_models: bool = True
    memory_limit: int | None = None  # bytes each job may reach (None: the default share of the machine)
    sensitivity_guided: bool = False  # add a per-layer-ratio run per structured method × ratio
    sensitivity: dict = field(default_factory=dict)  # ratios, limit, method, bn_recalibrate for that scan
    model_code: str | None = None
    model_kwargs: dict | None = None
    weights: str | None = None
    trust: bool = False  # set by `sweep --trust`, never by the plan file
    input_shape: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    executor: str = "local"  # where the runs execute: "local" (this process) or "ray" (a Ray cluster)
    address: str | None = None  # the Ray cluster: HOST:PORT, "auto", or None to start one on this machine
    cpus_per_run: float = 1.0  # Ray resources each run asks for
    gpus_per_run: float = 0.0

    def check(self) -> None:
        """Refuse what makes a plan meaningless before it starts: a run listed twice (it would run twice,
        one copy reported as "computed by another process"), criteria that all weigh nothing (nothing
        could be ranked), a name too long to show or store."""
        if len(self.name) > MAX_NAME:
            raise UserError(f"[plan] name is {len(self.name)} characters long; keep it to {MAX_NAME} or fewer")
        for key, values in (("methods", self.methods), ("ratios", self.ratios), ("target_speedups", self.target_speedups),
                             ("target_latencies", self.target_latencies),
                             ("target_latency_speedups", self.target_latency_speedups)):
            seen: set = set()
            twice = [v for v in values if v in seen or seen.add(v)]
            if twice:
                raise UserError(f"[sweep] {key} lists {twice[0]!r} twice, so the same runs would run twice; list each "
                                "once")
        if self.criteria and not any(c.weight > 0 for c in self.criteria):
            raise UserError("[criteria]: every weight is 0, so no run could be ranked above another; give at least "
                            "one criterion a weight above 0")

    def configs(self) -> list[tuple[PruneConfig, Recovery]]:
        """One PruneConfig per run (method × target × recovery), validated (see `check`). Unstructured
        methods get no target-speed-up runs: zeroed weights do not reduce MACs."""
        self.check()
        out = []
        targets = [("pruning_ratio", r) for r in self.ratios] + [("target_speedup", s) for s in self.target_speedups] \
            + [("target_latency", t) for t in self.target_latencies] \
            + [("target_latency_speedup", s) for s in self.target_latency_speedups]
        for method in self.methods:
            for kind, value in targets:
                if kind != "pruning_ratio" and not get_method(method).structured:
                    continue
                for rec in self.recoveries:
                    kw = dict(self.prune)
                    kw.update(rec.options)
                    kw.update(method=method, seed=self.seed, **only_target(kind, float(value)))
                    try:
                        cfg = PruneConfig(**kw)
                        cfg.validate()
                    except TypeError as exc:
                        raise UserError(f"plan: bad pruning option ({exc})") from exc
                    except UserError as exc:
                        raise UserError(f"plan: {method} at {kind.replace('_', ' ')} {value}: {exc}") from exc
                    twin = next((r for c, r in out if c == cfg), None)
                    if twin is not None:  # same settings, same run key: it would run once and be listed twice
                        raise UserError(f"[[recovery]] {twin.name!r} and {rec.name!r} give the same settings, so "
                                        "the same runs would run twice; keep one, or make them differ")
                    out.append((cfg, rec))
        if not out:
            raise UserError("plan: no runs; give [sweep] methods and ratios (or target_speedups, target_latencies "
                            "or target_latency_speedups for structured methods)")
        return out

    def model_identity(self) -> dict:
        """What identifies the model in run keys: the source and its flags, plus the file's content digest."""
        ident = {"source": self.model, "code": self.model_code, "kwargs": self.model_kwargs, "weights": self.weights,
                 "input_shape": list(self.input_shape) if self.input_shape else None,
                 "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}
        ident["digest"] = _file_digest(self.model)
        return ident

    def to_json(self) -> dict:
        """Plain dict, stored with the results (the report shows the setup from it)."""
        d = asdict(self)
        d["criteria"] = [c.to_json() for c in self.criteria]
        d["recoveries"] = [{"name": r.name, "options": r.options, "summary": r.summary} for r in self.recoveries]
        return d

    def resolved_store(self, override: str | Path | None = None) -> Path:
        """The store path: the command-line choice, else the plan's, else the user data directory."""
        if override:
            return Path(override)
        if self.store:
            return Path(self.store)
        return default_store_path()

    def models_dir(self, store_path: Path) -> Path:
        """Where the pruned models of the runs go (one folder per run)."""
        return Path(self.out_dir) if self.out_dir else Path(store_path).parent / "models"

    def check_outputs(self, store_path: Path) -> None:
        """Refuse, before any work, a models folder that is a file or cannot be written."""
        if not self.save_models:
            return
        folder = self.models_dir(store_path)
        where = "[plan] out_dir" if self.out_dir else "the models folder beside the store"
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{where} {folder} is a file; name a folder for the pruned models (out_dir)")
        check_writable(folder, flag=f"{where} (out_dir)", folder=True)


def _file_digest(source: str) -> str | None:
    """sha256 prefix of a model file (demo sources: their weights file), so retrained weights get new keys."""
    path = None
    parsed = ModelSource.parse(source)
    if parsed.is_demo:
        from engine.models import demo_path

        path = demo_path(parsed.name)
    elif parsed.kind is not ModelKind.TORCHVISION:
        path = Path(source)
    if path is None or not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


EXECUTORS = ("local", "ray")
MAX_NAME = 200  # characters of a plan's name: it titles the report and names the store's rows


def _executor_keys(plan: Plan, plan_t: dict) -> None:
    """[plan] executor, address, cpus_per_run, gpus_per_run: where the runs execute (flags override them)."""
    plan.executor = _expect(plan_t.get("executor", "local"), str, "[plan] executor", '"local" or "ray"')
    if plan.executor not in EXECUTORS:
        raise UserError(f"[plan] executor must be \"local\" or \"ray\", got {_shown(plan.executor)}")
    if "address" in plan_t:
        plan.address = _expect(plan_t["address"], str, "[plan] address", 'HOST:PORT of a Ray cluster, or "auto"')
        if not plan.address.strip():
            raise UserError('[plan] address is empty; give HOST:PORT of the Ray head, or "auto"')
    for key in ("cpus_per_run", "gpus_per_run"):
        if key in plan_t:
            value = _expect(plan_t[key], (int, float), f"[plan] {key}", "a number of CPUs or GPUs (0 or more)")
            if isinstance(value, bool) or not 0 <= value < 1e6:
                raise UserError(f"[plan] {key} must be a number of 0 or more, got {_shown(value)}")
            setattr(plan, key, float(value))
    if plan.cpus_per_run == 0 and plan.gpus_per_run == 0:
        raise UserError("[plan] cpus_per_run and gpus_per_run are both 0; each run needs at least one of them")


def _methods(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        if value in ("structured", "unstructured"):
            return tuple(m.name for m in all_methods(value))
        if value == "all":
            return tuple(m.name for m in all_methods())
        value = [value]
    _expect(value, list, "[sweep] methods", 'a list of method names, "structured", "unstructured" or "all"')
    for name in value:
        if not isinstance(name, str):
            raise UserError(f"[sweep] methods must hold method names, got {name!r}")
        try:
            get_method(name)
        except UserError as exc:
            raise UserError(f"[sweep] methods: {exc}") from None
    return tuple(value)


def _read_toml(text: str, source: str) -> dict:
    """The plan's TOML document, with only known sections and keys."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{source} nests its values too deeply to be a plan; see examples/plan.toml") from None
    unknown = set(doc) - set(PLAN_SECTIONS)
    if unknown:
        raise UserError(f"{source}: unknown section(s) {', '.join(map(_key_name, sorted(unknown)))}; "
                        f"valid: {', '.join(PLAN_SECTIONS)}")
    for section, keys in PLAN_SECTIONS.items():
        if section in doc and keys is not None:
            _expect(doc[section], dict, f"[{section}]", "a table")
            bad = set(doc[section]) - keys
            if bad:
                raise UserError(f"{source}: unknown key(s) in [{section}]: {', '.join(map(_key_name, sorted(bad)))}; "
                                f"valid: {', '.join(sorted(keys))}")
    return doc


def _path_resolver(base: Path) -> Callable[[Any, str], str]:
    """A checker turning a plan's path value into a path string, relative ones resolved against `base`."""
    def path(value: Any, where: str) -> str:
        _expect(value, str, where, "a path string")
        if not value or "\x00" in value:
            raise UserError(f"{where} must be a path, got {_shown(value)}")
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # ~name of a user this machine does not know
            raise UserError(f"{where}: cannot find the home folder in {_shown(value)}; write the full path") from None
        return str(p if p.is_absolute() else base / p)
    return path


def _plan_keys(plan: Plan, plan_t: dict, path: Callable, source: str) -> None:
    """[plan]: name, seed, where results and models go, the memory budget and the executor."""
    plan.name = _expect(plan_t.get("name", Path(source).stem), str, "[plan] name", "a string")
    plan.seed = _expect(plan_t.get("seed", 0), int, "[plan] seed", "an integer")
    if "store" in plan_t:
        plan.store = path(plan_t["store"], "[plan] store")
    if "out_dir" in plan_t:
        plan.out_dir = path(plan_t["out_dir"], "[plan] out_dir")
    plan.save_models = _expect(plan_t.get("save_models", True), bool, "[plan] save_models", "true or false")
    if "memory_limit" in plan_t:
        limit = _expect(plan_t["memory_limit"], (str, int), "[plan] memory_limit", 'a size such as "8G" or "70%"')
        try:
            plan.memory_limit = parse_limit(limit)
        except UserError as exc:
            raise UserError(f"{source}: [plan] memory_limit: {exc}") from None
    _executor_keys(plan, plan_t)


def _model_keys(plan: Plan, model_t: dict, path: Callable, source: str) -> None:
    """[model]: the source, its code and weights, and the input it expects (never trust)."""
    if "source" not in model_t:
        raise UserError(f"{source}: [model] source is missing; e.g. source = \"demo:resnet\" or a model file")
    src = _expect(model_t["source"], str, "[model] source", "a string such as \"demo:resnet\"")
    if ModelSource.parse(src).is_file or Path(src).suffix in (".pt", ".pth") or src.startswith((".", "/")):
        src = path(src, "[model] source")
    plan.model = src
    if "code" in model_t:
        code = _expect(model_t["code"], str, "[model] code", "PATH.py:ClassName")
        file, cls = split_code(code)
        plan.model_code = f"{path(file, '[model] code')}:{cls}" if ":" in code else code
    if "kwargs" in model_t:
        plan.model_kwargs = _expect(model_t["kwargs"], dict, "[model] kwargs", "a table of arguments")
    if "weights" in model_t:
        plan.weights = path(model_t["weights"], "[model] weights")
    if "trust" in model_t:  # trust is the person's to give, not the file's: a shared plan must not grant it
        raise UserError(f"{source}: [model] trust cannot be set in a plan; pass --trust to `sweep` if you trust "
                        "the model file (it holds code that runs when it loads)")
    if "input_shape" in model_t:
        shape = _expect(model_t["input_shape"], list, "[model] input_shape", "[C, H, W]")
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise UserError(f"[model] input_shape must be three positive integers [C, H, W], got {shape!r}")
        plan.input_shape = tuple(shape)
    for key, low in (("mean", -1e9), ("std", 0.0)):  # a zero std would divide every pixel by zero
        if key in model_t:
            setattr(plan, key, _numbers(model_t[key], f"[model] {key}", low, None,
                                        "per channel" + (", above 0" if key == "std" else "")))


def _sweep_keys(plan: Plan, sweep_t: dict, source: str) -> None:
    """[sweep]: the methods, ratios and target speed-ups crossed, and whether guided runs are added."""
    if "methods" not in sweep_t:
        raise UserError(f"{source}: [sweep] methods is missing; e.g. methods = [\"l1\", \"l2\"] or \"structured\"")
    plan.methods = _methods(sweep_t["methods"])
    plan.ratios = _numbers(sweep_t.get("ratios", []), "[sweep] ratios", 0.0, 1.0, "between 0 and 1 (exclusive)")
    plan.target_speedups = _numbers(sweep_t.get("target_speedups", []), "[sweep] target_speedups", 1.0, None,
                                    "above 1.0")
    plan.target_latencies = _numbers(sweep_t.get("target_latencies", []), "[sweep] target_latencies", 0.0, None,
                                     "above 0 (milliseconds)")
    plan.target_latency_speedups = _numbers(sweep_t.get("target_latency_speedups", []),
                                            "[sweep] target_latency_speedups", 1.0, None, "above 1.0 (times faster)")
    if not (plan.ratios or plan.target_speedups or plan.target_latencies or plan.target_latency_speedups):
        raise UserError(f"{source}: [sweep] needs ratios (e.g. [0.3, 0.5, 0.7]), target_speedups (e.g. [2.0]), "
                        "target_latencies (milliseconds, e.g. [20.0]) or target_latency_speedups (e.g. [2.0])")
    plan.sensitivity_guided = _expect(sweep_t.get("sensitivity_guided", False), bool, "[sweep] sensitivity_guided",
                                      "true or false")


def _recoveries(doc: dict, source: str) -> tuple[Recovery, ...]:
    """[[recovery]] tables (one table alone is accepted too), each named, the names distinct."""
    recoveries = doc.get("recovery", [{"name": "none"}])
    if isinstance(recoveries, dict):
        recoveries = [recoveries]
    _expect(recoveries, list, "[[recovery]]", "an array of tables")
    recs = []
    for i, r in enumerate(recoveries):
        _expect(r, dict, f"[[recovery]] #{i + 1}", "a table")
        bad = set(r) - RECOVERY_KEYS - {"preset"}
        if bad:
            raise UserError(f"{source}: unknown key(s) in [[recovery]] #{i + 1}: {', '.join(map(_key_name, sorted(bad)))}; "
                            f"valid: {', '.join(sorted(RECOVERY_KEYS | {'preset'}))}")
        where = f"[[recovery]] #{i + 1}"
        if "name" in r:
            _expect(r["name"], str, f"{where} name", "a string")
        given = {k: v for k, v in r.items() if k not in ("name", "preset")}
        if "preset" in r:
            given = with_preset(r["preset"], given, f"{source}: {where} preset")
        opts = check_prune_options(given, where)
        recs.append(Recovery(str(r.get("name") or r.get("preset") or Recovery(options=opts).summary), opts))
    if len({r.name for r in recs}) != len(recs):
        raise UserError(f"{source}: two [[recovery]] tables share a name; give each a distinct name")
    return tuple(recs)


def parse_plan(text: str, base_dir: str | Path = ".", source: str = "plan") -> Plan:
    """Build a Plan from TOML text; relative paths are resolved against `base_dir`.

    Every error is a UserError naming the bad key and how to fix it.
    """
    doc = _read_toml(text, source)
    path = _path_resolver(Path(base_dir))
    plan = Plan()
    _plan_keys(plan, doc.get("plan", {}), path, source)
    _model_keys(plan, doc.get("model", {}), path, source)
    plan.data = _expect(doc.get("data", {}).get("spec", "fashion-mnist"), str, "[data] spec", "a dataset spec string")
    plan.data = _resolved_data(plan.data, path)
    _sweep_keys(plan, doc.get("sweep", {}), source)
    plan.sensitivity = check_sensitivity_options(dict(doc.get("sensitivity", {})))
    plan.prune = check_prune_options(dict(doc.get("prune", {})), "[prune]")
    plan.recoveries = _recoveries(doc, source)
    if "criteria" in doc:
        plan.criteria = criteria_from_toml(doc["criteria"])
    plan.configs()  # validates every combination now, before any work starts
    return plan


def _resolved_data(spec: str, path: Callable) -> str:
    """A folder dataset's path resolved against the plan's folder; anything else as written (a bad spec is
    refused when the data is loaded, as from the command line)."""
    try:
        data = DataSource.parse(spec)
    except UserError:
        return spec
    if data.path and data.scheme in ("imagefolder", "cifar10"):
        return str(DataSource(data.scheme, str(path(data.path, "[data] spec"))))
    return spec


def load_plan(path: str | Path) -> Plan:
    """Read and validate a TOML plan file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"plan file {path} does not exist; see examples/plan.toml for a documented example")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read plan file {path}: {exc}") from None
    return parse_plan(text, path.resolve().parent, str(path))
