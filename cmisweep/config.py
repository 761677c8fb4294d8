"""Typed configuration of one trial, validated at the edge (a YAML file or a sweep's sample).

`cmisweep train CONFIG.yaml` reads a TrialConfig; a search space (cmisweep.sweep.space) holds
one as its fixed settings and overrides keys per trial.
"""
from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cmisweep import migrate
from cmisweep import regularizer as R
from cmisweep.models.critics import HeadChoice


class Strict(BaseModel):
    # allow_inf_nan off: YAML's .inf / .nan in any numeric field can never train (lr: .inf started
    # trials that all failed), so they are refused at the edge like any other bad value
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


from cmisweep.vocabulary import SPEECH_SETS, Dataset, EvalMetric, eval_metrics, modality


class DataConfig(Strict):
    dataset: Dataset = "fashion-mnist"
    path: str | None = None  # a directory; default: $CMISWEEP_DATA, ./data (and Debian's dir for images)
    split_seed: Annotated[int, Field(ge=0)] = 0
    train_size: PosInt | None = None  # a seeded subset of the training examples (segments), for reduced runs
    val_size: PosInt | None = None
    test_size: PosInt | None = None  # images only: speech evaluates whole test utterances
    # speech
    segment_frames: Annotated[int, Field(ge=4, le=400)] = 20  # T: 200 ms of 10 ms frames
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1  # of the training utterances
    max_utterances: PosInt | None = None  # per split, seeded, for quick runs

    @property
    def modality(self) -> str:
        return modality(self.dataset)

    @model_validator(mode="after")
    def _check(self):
        if self.modality == "speech" and self.test_size is not None:
            raise ValueError("test_size is for images; speech evaluates whole test utterances (use max_utterances)")
        if self.dataset == "speech-folder" and self.path is None:
            raise ValueError("dataset speech-folder needs path: the corpus root (root/<speaker>/<utterance>.wav)")
        return self


class PixelCNNConfig(Strict):
    kind: Literal["pixelcnn_vae"] = "pixelcnn_vae"
    z_dim: PosInt = 32
    layers: Annotated[int, Field(ge=2, le=64)] = 13
    maps: PosInt = 64
    kernel_sizes: list[PosInt] | None = None  # default: 7,7,7,7,7 then 5s then 3s
    s_layer: Annotated[int, Field(ge=2)] = 6
    z_channels: PosInt = 4
    encoder_channels: PosInt = 64
    # plain: masked convs with ReLU; he2019: the residual PixelCNN of He et al. (2019) that Sect. 6.1
    # of the paper uses (cmisweep/models/he2019.py)
    decoder: Literal["plain", "he2019"] = "plain"

    @model_validator(mode="after")
    def _check(self):
        if self.decoder == "he2019" and self.maps % 2:
            raise ValueError(f"decoder he2019 halves the maps in its bottleneck blocks: maps = {self.maps} must be even")
        if self.s_layer > self.layers:
            raise ValueError(f"s_layer = {self.s_layer} must be <= layers = {self.layers} (s is the input of layer s_layer)")
        if self.kernel_sizes is not None:
            if len(self.kernel_sizes) != self.layers:
                raise ValueError(f"kernel_sizes has {len(self.kernel_sizes)} entries, expected layers = {self.layers}")
            if any(k % 2 == 0 for k in self.kernel_sizes):
                raise ValueError(f"kernel_sizes must be odd, got {self.kernel_sizes}")
        return self


class DSAEConfig(Strict):
    kind: Literal["dsae"] = "dsae"
    z_dim: PosInt = 64
    s_dim: PosInt = 64
    hidden: PosInt = 256


class PluginModelConfig(Strict):
    """A user's SequentialVAE (docs/design.md section 9): `plugin` names its class
    (cmisweep.plugins), which declares `name`, `modality` ("image" or "speech") and a pydantic
    `Params` model that validates `params`; it is built as Class(params, x_shape)."""

    kind: Literal["plugin"] = "plugin"
    plugin: str
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self):
        from cmisweep import plugins

        plugins.check_params(self.plugin_class, self.params, "model")
        return self

    @cached_property
    def plugin_class(self):
        from cmisweep import plugins

        expected = "a SequentialVAE (cmisweep.models.protocol) with Params and modality 'image' or 'speech'"
        cls = plugins.load_checked(self.plugin, "model", ("name", "Params", "modality", "encode", "elbo_terms",
                                                          "local_features", "generate"), expected)
        if cls.modality not in ("image", "speech"):
            raise plugins.PluginError(f"model plug-in {self.plugin!r} has modality {cls.modality!r}: expected {expected}")
        return cls


ModelConfig = Annotated[Union[PixelCNNConfig, DSAEConfig, PluginModelConfig], Field(discriminator="kind")]
MODALITY = {"pixelcnn_vae": "image", "dsae": "speech"}
# whether q draws s from x alone (z and s independent given x), which bounds C by KL(z) (c_bound):
# the PixelCNN-VAE's s is a function of x; the DSAE's q(s_t | x, z, s_<t) reads z
S_FROM_X = {"pixelcnn_vae": True, "dsae": False}


def model_modality(model) -> str:
    """The data a model config's model is for: the built-ins' by kind, a plug-in's own."""
    return model.plugin_class.modality if model.kind == "plugin" else MODALITY[model.kind]


def s_from_x(model) -> bool:
    """Whether the model's q draws s from x alone: the built-ins' by kind, a plug-in's own
    `s_from_x` (False when it does not say)."""
    return bool(getattr(model.plugin_class, "s_from_x", False)) if model.kind == "plugin" else S_FROM_X[model.kind]


class RegularizerConfig(Strict):
    """The regularizer as data: a preset and the paper's knob (the gamma of its Fig. 3 and tables),
    from which J's weights w_z, w_m, w_c follow (docs/design.md section 1). `objective` is that
    resolution, built once per config.

    Or a plug-in (docs/design.md section 9): `plugin` names it (cmisweep.plugins), `params` are its
    parameters, validated by its own pydantic model; the knob fills its gamma axis if it declares
    one. `preset` is then its name in reports and MLflow (default: the plug-in's own)."""

    preset: str = "vanilla"
    plugin: str | None = None  # 'module:Class', 'path/file.py:Class' or an entry point's name
    params: dict[str, Any] = {}  # the plug-in's parameters
    knob: Annotated[float, Field(ge=0)] = 0.0  # the paper's gamma axis: J's alpha for beta/advmi
    alpha: Annotated[float, Field(ge=0)] | None = None  # cmi only: J's alpha (w_z = 1 - alpha) apart from the knob
    m_term: R.MTerm = "auto"
    c_form: R.CForm = "paper"  # D_c negatives p(z)q(s) or q(z)q(s)
    c_bound: R.CBound = "none"  # kl_z: J takes min(C-hat, KL(z)), C's bound where s depends on z only via x
    critic_steps: Annotated[int, Field(ge=1, le=100)] = 2
    critic_lr: PosFloat | None = None  # default: 10x the VAE lr (the paper)
    critic_head: HeadChoice = "model"  # model: the paper's head
    critic_width: PosInt = 256
    critic_precision: R.CriticPrecision = "same"
    critic_z: R.CriticZ = "reuse"
    critic_bn: R.CriticBN = "frozen"
    allow_weights_above_one: bool = False

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        # a file a user writes keeps today's names; stored copies were migrated before (cmisweep.migrate)
        message = migrate.refusal("regularizer", data) if isinstance(data, dict) else None
        if message:
            raise ValueError(message)
        if isinstance(data, dict) and data.get("plugin") and "preset" not in data:
            from cmisweep import plugins

            try:  # a plug-in is named in reports by its own name unless the config names it
                data = {**data, "preset": getattr(plugins.load(data["plugin"], "regularizer"), "name", "plugin")}
            except plugins.PluginError:
                pass  # refused with its reason in _check
        return data

    @model_validator(mode="after")
    def _check(self):
        if self.plugin is None:
            if self.preset not in R.PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; expected one of {', '.join(R.PRESETS)}, "
                                 "or a plug-in (regularizer.plugin)")
            if self.params:
                raise ValueError("params are a plug-in's parameters; the paper's presets take knob and alpha")
            self.objective  # built here once: raises ValueError with the reason
            return self
        if self.preset in R.PRESETS:
            self.plugin_class  # a reference that does not resolve says so first
            raise ValueError(f"preset {self.preset!r} is a built-in; a plug-in needs a name of its own")
        if self.alpha is not None:
            raise ValueError("alpha is the paper's cmi only; a plug-in's parameters go under params")
        from cmisweep import plugins

        plugins.check_params(self.plugin_class, self.plugin_params, "regularizer")
        return self

    @cached_property
    def plugin_class(self):
        """The plug-in's class, loaded and checked (a PluginError, one line, if not)."""
        from cmisweep import plugins

        # what the trainer calls (regularizer_api.Plugin has it all), checked without importing the
        # trainer's layer into the configs'
        return plugins.load_checked(self.plugin, "regularizer", ("name", "Params", "aux_steps", "networks", "loss",
                                                                 "aux_loss", "state_dict", "load_state_dict"),
                                    "a subclass of cmisweep.regularizer_api.Plugin")

    @property
    def plugin_params(self) -> dict:
        """The plug-in's parameters with the knob on its gamma axis (if it has one)."""
        axis = self.plugin_class.gamma_param
        if axis is None:
            return dict(self.params)
        if axis in self.params:
            raise ValueError(f"params.{axis} is the plug-in's gamma axis: set it with the knob (search.gamma)")
        return {**self.params, axis: self.knob}

    @cached_property
    def objective(self) -> R.Regularizer:
        """J's weights and terms for this preset and knob (Eq. 14 of the paper and its baselines)."""
        return R.preset(
            self.preset, self.knob, self.alpha, m_term=self.m_term, c_form=self.c_form,
            critic_steps=self.critic_steps, allow_weights_above_one=self.allow_weights_above_one,
            c_bound=self.c_bound,
        )


# the regularizer's keys that set how critics train (D_m, D_c): a preset that trains none ignores them
C_KEYS = frozenset({"c_form", "c_bound"})  # how C is read: nothing to a preset without C either
CRITIC_KEYS = frozenset(k for k in RegularizerConfig.model_fields if k.startswith("critic_")) | C_KEYS


class TrainConfig(Strict):
    epochs: Annotated[int, Field(ge=0)] = 300  # 0: evaluate the untrained network (a baseline)
    batch_size: PosInt = 50
    lr: PosFloat = 1e-4
    # auto: the fastest path measured safe for the model (BENCHMARKS.md): bf16 autocast and
    # channels-last for the PixelCNN-VAE (~3-6x a plain fp32 step, objective within 1%), fp32 for
    # the DSAE (bf16 gains nothing on its LSTMs)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    memory_format: Literal["auto", "contiguous", "channels_last"] = "auto"  # auto: channels_last for images
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: PosInt | None = None  # torch intra-op threads; default: torch's choice
    select_by: Literal["objective", "elbo"] = "objective"  # which validation score picks the epoch
    steps_per_epoch: PosInt | None = None  # cap, for quick runs; default: one pass over train
    check_every: PosInt = 50  # steps between divergence checks (each check is a host sync)
    # a batch loss (nats per example) above this is divergence too: at a learning rate of 10 the
    # loss of a PixelCNN-VAE climbs past 1e8 and stays finite; trained models sit far below 1e4
    max_loss: PosFloat = 1e7
    eval_batch_size: PosInt = 500  # batch size of the per-epoch validation pass
    # the seed of everything after the initial weights (batch order, z and critic-negative draws);
    # default: the trial's seed, which also draws the initial weights. Set apart, it separates the
    # two sources of a seed's variation (the image study's collapse ablation)
    order_seed: Annotated[int, Field(ge=0)] | None = None
    # or the trial's seed plus this offset: every seed of a sweep gets a batch order of its own,
    # apart from the one its seed would give (a factor of the collapse factorial, issue 31)
    order_offset: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _one_order(self):
        if self.order_seed is not None and self.order_offset:
            raise ValueError("order_seed and order_offset both set: give the batch-order seed one way")
        return self


class IhatConfig(Strict):
    """Fresh critics trained after training on held-out encodings (Table 1)."""

    seeds: Annotated[int, Field(ge=1)] = 3
    steps: PosInt = 1000
    batch_size: PosInt = 100
    n_train: PosInt = 5000  # encodings of validation data that train the critics
    n_eval: PosInt = 5000  # encodings of test data that the estimate is read on
    head: HeadChoice = "model"
    width: PosInt = 256
    lr: PosFloat = 1e-3
    # auto: the critics train under bf16 autocast where the device has native bf16 (~2x, the
    # estimates within their seed spread: BENCHMARKS.md section 7), else fp32; read-out in fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # trained until converged (docs/design.md section 3): steps, 2 x steps, 4 x steps, ... each from
    # fresh critics with its own decay, until every estimate moves by at most max(tolerance, its
    # critic-seed std), up to max_steps (default 8 x steps); false: `steps` once, as before
    converge: bool = True
    max_steps: PosInt | None = None
    tolerance: PosFloat = 0.05
    # where s is sampled given z (the DSAE): the critics' pairs come from a pool of this many
    # (z, s) draws per encoding, drawn once for every doubling (metrics/encodings.py); 0: encode
    # every batch afresh
    pool_draws: Annotated[int, Field(ge=0)] = 8

    def doublings(self) -> list[int]:
        """The critic steps of each run the doubling rule may take: steps, 2 x steps, ... up to
        max_steps (8 x steps unless set)."""
        runs, cap = [self.steps], self.max_steps or 8 * self.steps
        while 2 * runs[-1] <= cap:
            runs.append(2 * runs[-1])
        return runs


class EvalConfig(Strict):
    enabled: bool = True
    ihat: IhatConfig | None = IhatConfig()
    probes: bool = True  # AoLR, AoSVM
    probe_per_class: PosInt = 100
    # the per-epoch AoLR probe (val/aolr, metrics.probes.epoch_aolr): labelled validation images per
    # class it fits on; null: off, unless MO-ASHA ranks on final/aolr (sweep.space.epoch_probe)
    epoch_probe: PosInt | None = None
    mcas: bool = True  # mCAS, mCAS(SVM) and the real-image baseline
    mcas_real_per_class: PosInt = 10
    mcas_samples: PosInt = 10
    sample_grid: bool = True
    eer: bool = True  # speech: EER(z), EER(s)
    vc_mcas: bool = True  # speech: voice-conversion mCAS on gender
    # paper: App. 7 of the paper, on test segments; utterance: the earlier variant on whole utterances
    vc_protocol: Literal["paper", "utterance"] = "paper"
    vc_segments: Annotated[int, Field(ge=2)] = 500  # paper: real test segments, half female, half male
    # opposite-gender pairs; paper: each converted both ways (2 x vc_pairs samples); utterance: one way
    vc_pairs: PosInt = 250
    # speech: VC-mCAS over the test speakers' identities (cmisweep.metrics.vc_speaker): gender is
    # too easy on the synthesized corpus to rank methods; conversions (and held-out real segments) per speaker
    vc_speaker: bool = True
    vc_speaker_segments: PosInt = 20
    batch_size: PosInt = 500
    # metric groups the trial leaves to `cmisweep evaluate` (its kept model is evaluated later)
    defer: list[EvalMetric] = []

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.defer)) != len(self.defer):
            raise ValueError(f"defer names a metric twice: {self.defer}")
        if self.vc_protocol == "paper" and self.vc_pairs > self.vc_segments // 2:
            raise ValueError(f"vc_pairs = {self.vc_pairs} > vc_segments / 2 = {self.vc_segments // 2}: each pair "
                             "takes one female and one male segment of the vc_segments (the paper: 250 of 500)")
        return self


# EvalConfig's switch of each metric group (vocabulary.EVAL_METRICS); I-hat is off when None
SWITCHES = {"ihat": "ihat", "probes": "probes", "mcas": "mcas", "eer": "eer", "vc_mcas": "vc_mcas",
            "vc_speaker": "vc_speaker"}


def switched_on(ev: EvalConfig) -> set[str]:
    """The metric groups the config runs (deferred or not)."""
    return {m for m, switch in SWITCHES.items() if getattr(ev, switch) not in (None, False)}


def selected(ev: EvalConfig, metrics) -> EvalConfig:
    """ev with exactly the groups in `metrics` on: a trial's own evaluation is selected(ev, what it
    does not defer); `cmisweep evaluate --metrics` selects what it asks for. A group switched off
    in the trial's config runs with its defaults when asked for (I-hat's settings of IhatConfig())."""
    metrics = set(metrics)
    update = {switch: (m in metrics) for m, switch in SWITCHES.items() if switch != "ihat"}
    update["ihat"] = (ev.ihat or IhatConfig()) if "ihat" in metrics else None
    return ev.model_copy(update=update)


class TrialConfig(Strict):
    name: str = "trial"
    seed: Annotated[int, Field(ge=0)] = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = PixelCNNConfig()
    regularizer: RegularizerConfig = RegularizerConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_model_kind(cls, data):
        """Without model.kind, the data's modality picks the model (images: PixelCNN-VAE, speech: DSAE)."""
        if not isinstance(data, dict):
            return data
        ds = data.get("data", {}).get("dataset") if isinstance(data.get("data"), dict) else None
        kind = "dsae" if ds in SPEECH_SETS else "pixelcnn_vae"
        model = data.get("model", {})
        if isinstance(model, dict) and "kind" not in model:
            data = {**data, "model": {"kind": kind, **model}}
        return data

    @model_validator(mode="after")
    def _check(self):
        if model_modality(self.model) != self.data.modality:
            raise ValueError(f"model {self.model.kind} is for {model_modality(self.model)} data; dataset "
                             f"{self.data.dataset} is {self.data.modality}")
        wrong = [m for m in self.evaluation.defer if m not in eval_metrics(self.data.modality)]
        if wrong:
            raise ValueError(f"evaluation.defer: {', '.join(wrong)} is not measured on {self.data.modality} data; "
                             f"expected some of {', '.join(eval_metrics(self.data.modality))}")
        if self.regularizer.c_bound != "none" and not s_from_x(self.model):
            how = "does not declare s_from_x" if self.model.kind == "plugin" else "draws s given z"
            raise ValueError(f"regularizer.c_bound: {self.regularizer.c_bound} bounds C by KL(z), which holds only where "
                             f"s depends on z through x alone; model {self.model.kind} {how}: expected c_bound: none")
        n = self.data.train_size
        if n is not None and n < self.train.batch_size:
            raise ValueError(f"data.train_size = {n} is smaller than train.batch_size = {self.train.batch_size}")
        return self

    @property
    def critic_lr(self) -> float:
        return self.regularizer.critic_lr or 10.0 * self.train.lr

    def critic_training(self, aux_lr: float | None = None) -> dict:
        """The Trainer's keyword arguments for how it trains the regularizer's networks (the
        critics): regularizer.critic_lr, else the regularizer's own aux_lr, else 10x the VAE lr."""
        r = self.regularizer
        lr = r.critic_lr or aux_lr or self.critic_lr
        return dict(critic_lr=lr, critic_precision=r.critic_precision, critic_z=r.critic_z, critic_bn=r.critic_bn)
