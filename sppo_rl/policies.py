"""SPPO policies: an SB3 actor plus a decoupled sequence-level critic.

The actor is exactly SB3's ``ActorCriticPolicy`` actor (features extractor, ``mlp_extractor.policy_net``,
``action_net``, ``log_std``) with the same parameter names, so weights move between SB3's PPO and SPPO
(:meth:`SPPOPolicy.load_actor_state_dict`). The critic is a separate network with its own features
extractor and its own optimizer. It is only ever evaluated on the *start* observation of an episode and
predicts the episode's outcome through a pluggable :mod:`value head <sppo_rl.value_heads>`.

Aliases (as SB3): ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sppo_rl.distributions import FastDistribution, fast_distribution
from sppo_rl.value_heads import ValueHead, make_value_head, resolve_value_head_name

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "SPPOPolicy", "SequenceCritic"]

ValueHeadSpec = str | type[ValueHead] | ValueHead


class SequenceCritic(nn.Module):
    """``V(s0)``: features extractor -> MLP trunk -> value head, on start observations only.

    :param observation_space: observation space (for SB3's preprocessing: one-hot, image scaling)
    :param features_extractor: the critic's own features extractor
    :param net_arch: hidden layer sizes of the trunk
    :param activation_fn: activation between hidden layers
    :param head: the value head, built for the trunk's output size
    :param normalize_images: divide image observations by 255
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        features_extractor: BaseFeaturesExtractor,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        head: ValueHead,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.normalize_images = normalize_images
        self.features_extractor = features_extractor
        layers: list[nn.Module] = []
        last = features_extractor.features_dim
        for width in net_arch:
            layers += [nn.Linear(last, width), activation_fn()]
            last = width
        self.trunk = nn.Sequential(*layers)
        self.latent_dim = last
        self.head = head

    def features(self, obs: PyTorchObs) -> th.Tensor:
        """Critic features ``(B, latent_dim)`` of a batch of (start) observations."""
        preprocessed = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        return self.trunk(self.features_extractor(preprocessed))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        """Raw head output ``(B,)`` (a logit for the Bernoulli head)."""
        return self.head(self.features(obs))

    def baseline(self, obs: PyTorchObs) -> th.Tensor:
        """``V(s0)`` ``(B,)`` in the outcome's units."""
        return self.head.baseline_from_output(self(obs))

    def loss(self, obs: PyTorchObs, outcomes: th.Tensor) -> th.Tensor:
        """The head's training loss on a batch of start observations and their outcomes."""
        return self.head.loss_from_output(self(obs), outcomes)


NetArch = list[int] | dict[str, list[int]]

_FUSED_ADAM = tuple(int(part) for part in th.__version__.split(".")[:2]) >= (2, 4)
"""Whether torch's fused Adam runs on the CPU (from torch 2.4)."""

_NET_ARCH_SIDES = ("pi", "vf")
_LEGACY_ALIASES = {
    "value_net.": "critic.",
    "pi_features_extractor.": "features_extractor.",
    "vf_features_extractor.": "features_extractor.",  # SPPO built the actor's extractor as SB3's shared one
}
"""State-dict prefixes of files written while the aliases were submodules, and the prefixes they alias."""


def _check_net_arch(net_arch: Any) -> None:
    """Refuse a ``net_arch`` that SB3's ``ActorCriticPolicy`` would misread, naming the reason.

    Accepted as by PPO: ``None`` (SB3's default), a list of layer sizes (both networks), ``dict(pi=..., vf=...)``
    with either side optional (a missing side has no hidden layer, as in SB3's ``MlpExtractor``), and the
    pre-1.8 form ``[dict(pi=..., vf=...)]`` (SB3 warns and unwraps it).
    """

    def sizes(value: Any, where: str) -> None:
        if not isinstance(value, list | tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value
        ):
            raise ValueError(f"net_arch{where} must be a list of positive layer sizes, got {value!r}")

    if net_arch is None:
        return
    if isinstance(net_arch, list | tuple) and net_arch and isinstance(net_arch[0], Mapping):
        if len(net_arch) != 1:
            raise ValueError(
                f"net_arch={net_arch!r}: layers shared by the actor and the critic were removed in SB3 1.8 (and "
                "SPPO's critic never shares layers); pass dict(pi=[...], vf=[...])"
            )
        net_arch = net_arch[0]
    if isinstance(net_arch, Mapping):
        unknown = sorted(set(net_arch) - set(_NET_ARCH_SIDES))
        if unknown:
            raise ValueError(f"net_arch has unknown keys {unknown}; use 'pi' (actor) and 'vf' (critic trunk)")
        for side, value in net_arch.items():
            sizes(value, f"[{side!r}]")
        return
    if isinstance(net_arch, list | tuple) and any(isinstance(n, Mapping) for n in net_arch):
        raise ValueError(
            f"net_arch={net_arch!r}: layers shared by the actor and the critic were removed in SB3 1.8 (and SPPO's "
            "critic never shares layers); pass dict(pi=[...], vf=[...])"
        )
    sizes(net_arch, "")


class SPPOPolicy(ActorCriticPolicy):
    """Actor (as SB3's ``ActorCriticPolicy``) plus a decoupled :class:`SequenceCritic`.

    Takes every argument of SB3's ``ActorCriticPolicy``, so a PPO ``policy_kwargs`` works unchanged, except
    those that would change what SPPO is:

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: the actor's learning rate schedule (the critic's is set by :class:`~sppo_rl.SPPO`)
    :param net_arch: a list of hidden sizes (the actor and the critic trunk alike) or ``dict(pi=[...], vf=[...])``
        (``vf`` is the critic trunk; a missing side has no hidden layer, as in PPO); ``None``: SB3's default
    :param activation_fn: activation between hidden layers
    :param ortho_init: orthogonal initialisation (as SB3)
    :param use_sde: gSDE; must be False
    :param log_std_init: initial log standard deviation of a Gaussian policy
    :param full_std: a gSDE option; ignored, as PPO ignores it without gSDE
    :param use_expln: a gSDE option; ignored, as PPO ignores it without gSDE
    :param squash_output: tanh-squashed actions; SB3 offers it only with gSDE, so it must be False
    :param features_extractor_class: the features extractor of the actor, and a second one of the critic
    :param features_extractor_kwargs: its keyword arguments
    :param share_features_extractor: must be False (the default): the critic reads only start observations
        and has its own features extractor, which is what ``share_features_extractor=False`` asks of PPO
    :param normalize_images: divide image observations by 255
    :param optimizer_class: the optimizer of the actor and of the critic
    :param optimizer_kwargs: its keyword arguments (``None``: SB3's Adam ``eps=1e-5``, with torch's fused
        implementation where torch has it for the CPU, from 2.4)
    :param value_head: ``"bernoulli"`` (default), ``"gaussian"``, a :class:`~sppo_rl.value_heads.ValueHead`
        subclass or instance; ``"auto"`` builds a Bernoulli head that :class:`~sppo_rl.SPPO` replaces by the
        right one when it sees the first episode end
    :param value_head_kwargs: extra constructor arguments of the head

    The actor's optimizer is ``self.optimizer`` (as SB3), the critic's is ``self.critic_optimizer``. The module
    tree holds each tensor once: ``value_net`` (the critic), ``pi_features_extractor`` (the actor's extractor)
    and ``vf_features_extractor`` (the critic's) are read-only aliases for SB3 code that looks for them, not
    submodules, so they add no keys to :meth:`state_dict`.
    """

    critic: SequenceCritic
    critic_optimizer: th.optim.Optimizer
    value_head_spec: ValueHeadSpec

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: NetArch | list[dict[str, list[int]]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = False,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        value_head: ValueHeadSpec = "bernoulli",
        value_head_kwargs: dict[str, Any] | None = None,
        **unsupported: Any,
    ) -> None:
        if use_sde:
            raise ValueError("SPPO does not support gSDE (use_sde=True); use the default Gaussian exploration")
        if squash_output:
            raise ValueError("squash_output=True: SB3 squashes actions only with gSDE, which SPPO does not support")
        if share_features_extractor:
            raise ValueError(
                "share_features_extractor=True: the SPPO critic is decoupled (it reads only the start observation "
                "of each episode, with its own features extractor and optimizer); leave it False"
            )
        if unsupported:
            raise TypeError(f"SPPOPolicy got unexpected arguments: {', '.join(sorted(unsupported))}")
        _check_net_arch(net_arch)
        self._set_value_head_spec(value_head)
        self.value_head_kwargs = dict(value_head_kwargs or {})
        if isinstance(value_head, str) and value_head != "auto":
            resolve_value_head_name(value_head)  # validates the type early
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            # SB3's eps, plus one fused kernel for all the parameters: 2.5x faster steps than the multi-tensor
            # implementation on small MLPs (3x faster than SB3's default for-loop on the CPU)
            optimizer_kwargs = {"eps": 1e-5, "fused": True} if _FUSED_ADAM else {"eps": 1e-5, "foreach": True}
        super().__init__(  # SB3 unwraps the pre-1.8 form [dict(...)] with a warning, as for PPO
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,  # type: ignore[arg-type]
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=False,
            log_std_init=log_std_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=True,  # builds only the actor's extractor; the critic's is in _build
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        # SB3 registered the actor's extractor under three names; keep one (the aliases are properties below)
        del self.pi_features_extractor
        del self.vf_features_extractor
        self.share_features_extractor = False

    # ---- construction -----------------------------------------------------------------------------------

    def _set_value_head_spec(self, spec: ValueHeadSpec) -> None:
        # Bypass nn.Module.__setattr__: a head *instance* given as the spec must not be registered as a
        # second submodule (it lives in self.critic.head).
        object.__setattr__(self, "value_head_spec", spec)

    @property
    def actor_net_arch(self) -> list[int]:
        """Hidden sizes of the actor MLP."""
        return list(self.net_arch.get("pi", [])) if isinstance(self.net_arch, dict) else list(self.net_arch)

    @property
    def critic_net_arch(self) -> list[int]:
        """Hidden sizes of the critic trunk."""
        return list(self.net_arch.get("vf", [])) if isinstance(self.net_arch, dict) else list(self.net_arch)

    @property
    def value_net(self) -> SequenceCritic:  # type: ignore[override]
        """The critic, for SB3 code that looks for ``value_net`` (not a second submodule)."""
        return self.critic

    @property
    def pi_features_extractor(self) -> BaseFeaturesExtractor:  # type: ignore[override]
        """The actor's features extractor (SB3's name; not a second submodule)."""
        return self.features_extractor

    @property
    def vf_features_extractor(self) -> BaseFeaturesExtractor:  # type: ignore[override]
        """The critic's features extractor (SB3's name; not a second submodule)."""
        return self.critic.features_extractor

    def _build_mlp_extractor(self) -> None:
        # The actor half of SB3's MlpExtractor; its value branch is empty (no parameters).
        self.mlp_extractor = MlpExtractor(
            self.features_dim,
            net_arch=dict(pi=self.actor_net_arch, vf=[]),
            activation_fn=self.activation_fn,
            device=self.device,
        )

    def _make_action_net(self) -> None:
        latent_dim_pi = self.mlp_extractor.latent_dim_pi
        if isinstance(self.action_dist, DiagGaussianDistribution):
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(
                latent_dim=latent_dim_pi, log_std_init=self.log_std_init
            )
        elif isinstance(
            self.action_dist, (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)
        ):
            self.action_net = self.action_dist.proba_distribution_net(latent_dim=latent_dim_pi)
        else:
            raise NotImplementedError(f"Unsupported action distribution {type(self.action_dist).__name__}")
        self.fast_distribution: FastDistribution = fast_distribution(self.action_dist)

    def _make_head(self, spec: ValueHeadSpec, latent_dim: int) -> ValueHead:
        return make_value_head("bernoulli" if spec == "auto" else spec, latent_dim, **self.value_head_kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()
        self._make_action_net()
        critic_arch = self.critic_net_arch
        critic_extractor = self.make_features_extractor()
        latent = critic_arch[-1] if critic_arch else critic_extractor.features_dim
        self.critic = SequenceCritic(
            self.observation_space,
            critic_extractor,
            critic_arch,
            self.activation_fn,
            self._make_head(self.value_head_spec, latent),
            normalize_images=self.normalize_images,
        )
        if self.ortho_init:
            gains = {
                self.features_extractor: np.sqrt(2),
                self.mlp_extractor: np.sqrt(2),
                self.action_net: 0.01,
                self.critic.features_extractor: np.sqrt(2),
                self.critic.trunk: np.sqrt(2),
                self.critic.head: 1.0,
            }
            for module, gain in gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.actor_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic_optimizer = self._make_critic_optimizer(lr_schedule(1))

    def _make_critic_optimizer(self, lr: float) -> th.optim.Optimizer:
        return self.optimizer_class(self.critic.parameters(), lr=lr, **self.optimizer_kwargs)  # type: ignore[call-arg]

    def set_value_head(self, spec: ValueHeadSpec) -> None:
        """Replace the value head (e.g. when ``"auto"`` is resolved) and rebuild the critic optimizer.

        Only meant before the critic is trained: the new head starts from scratch and the optimizer state is
        reset; the critic trunk keeps its weights.
        """
        lr = self.critic_optimizer.param_groups[0]["lr"]
        head = self._make_head(spec, self.critic.latent_dim)
        if self.ortho_init:
            head.apply(lambda m: self.init_weights(m, gain=1.0))
        self.critic.head = head.to(self.device)
        self._set_value_head_spec(spec)
        self.critic_optimizer = self._make_critic_optimizer(lr)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("use_sde", "squash_output", "full_std", "use_expln"):
            data.pop(key, None)
        data.update(value_head=self.value_head_spec, value_head_kwargs=self.value_head_kwargs)
        return data

    # ---- parameters ---------------------------------------------------------------------------------------

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the critic (features extractor, trunk, head)."""
        return list(self.critic.parameters())

    def actor_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not the critic's."""
        critic_ids = {id(p) for p in self.critic.parameters()}
        return [p for p in self.parameters() if id(p) not in critic_ids]

    def actor_state_dict(self) -> dict[str, th.Tensor]:
        """The actor's weights, under the same names as in SB3's ``ActorCriticPolicy``."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("critic.")}

    def load_actor_state_dict(self, state_dict: dict[str, th.Tensor]) -> None:
        """Load actor weights, e.g. from an SB3 PPO policy's ``state_dict()`` or from :meth:`actor_state_dict`.

        Keys of a PPO critic (``value_net.*``, ``mlp_extractor.value_net.*``, ``vf_features_extractor.*`` when
        not shared) are ignored; every actor key must be present with the right shape.
        """
        own = self.actor_state_dict()
        missing = [k for k in own if k not in state_dict]
        if missing:
            raise KeyError(f"Actor weights missing from the given state dict: {missing}")
        bad = [k for k in own if tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if bad:
            shapes = {k: (tuple(state_dict[k].shape), tuple(own[k].shape)) for k in bad}
            raise ValueError(f"Actor weight shapes differ (given, expected): {shapes}")
        self.load_state_dict({**self.state_dict(), **{k: state_dict[k] for k in own}})

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, also reading files saved while the aliases were submodules.

        Such files hold the critic twice (``critic.*`` and ``value_net.*``) and the actor's features extractor
        under ``pi_features_extractor.*`` and ``vf_features_extractor.*`` as well. An alias key fills its
        canonical key when that is absent; when both are given they must be equal, so the result never depends
        on the order of the keys.

        :param state_dict: the tensors to load
        :param strict: as ``nn.Module.load_state_dict`` (``False`` for a partial dict)
        :param assign: as ``nn.Module.load_state_dict``
        :return: the missing and unexpected keys, as ``nn.Module.load_state_dict``
        """
        aliases = _LEGACY_ALIASES
        canonical: dict[str, Any] = {k: v for k, v in state_dict.items() if not k.startswith(tuple(aliases))}
        for key, value in state_dict.items():
            prefix = next((p for p in aliases if key.startswith(p)), None)
            if prefix is None:
                continue
            target = aliases[prefix] + key[len(prefix) :]
            if target not in canonical:
                canonical[target] = value
            elif not th.equal(th.as_tensor(canonical[target]).cpu(), th.as_tensor(value).cpu()):
                raise ValueError(f"{key!r} and {target!r} name the same tensor but hold different values")
        return super().load_state_dict(canonical, strict=strict, assign=assign)

    # ---- actor --------------------------------------------------------------------------------------------

    def actor_output(self, obs: PyTorchObs) -> th.Tensor:
        """The actor's ``action_net`` output ``(n, d)``: logits, or the Gaussian's mean."""
        features = self.features_extractor(
            preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        )
        return self.action_net(self.mlp_extractor.forward_actor(features))

    def _log_std(self) -> th.Tensor | None:
        return self.log_std if isinstance(self.action_dist, DiagGaussianDistribution) else None

    def sample_actions(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sample one action per observation, as ``get_distribution(obs).get_actions()``, and its log-probability.

        Draws from the same distribution through the same random calls as SB3's distribution objects, without
        building them (see :mod:`sppo_rl.distributions`); this is the rollout's per-step path.

        :param obs: a batch of observations
        :return: ``(actions, log_prob)``; ``log_prob`` is ``(n,)``
        """
        return self.fast_distribution.sample(self.actor_output(obs), self._log_std())

    def log_prob_and_entropy(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Actor only: log-probabilities ``(n,)`` and entropies ``(n,)`` of ``actions`` (as stored in the buffer)."""
        return self.fast_distribution.log_prob_entropy(self.actor_output(obs), self._log_std(), actions)

    # ---- SB3's interface ----------------------------------------------------------------------------------

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """The critic's baseline ``V(obs)`` ``(B, 1)``; meaningful for start observations."""
        return self.critic.baseline(obs).unsqueeze(-1)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, critic baseline ``(B, 1)`` and log-probabilities, as SB3's ``ActorCriticPolicy.forward``."""
        distribution = self.get_distribution(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        shape: tuple[int, ...] = tuple(self.action_space.shape or ())
        return actions.reshape((-1, *shape)), self.predict_values(obs), log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Critic baseline ``(B, 1)``, log-probabilities and entropy, as SB3's signature."""
        log_prob, entropy = self.log_prob_and_entropy(obs, actions)
        return self.predict_values(obs), log_prob, entropy


MlpPolicy = SPPOPolicy


class CnnPolicy(SPPOPolicy):
    """:class:`SPPOPolicy` with SB3's ``NatureCNN`` features extractors (one for the actor, one for the critic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class MultiInputPolicy(SPPOPolicy):
    """:class:`SPPOPolicy` for ``Dict`` observations, with SB3's ``CombinedExtractor``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)
