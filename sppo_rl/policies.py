"""SPPO policies: an SB3 actor plus a decoupled sequence-level critic.

The actor is exactly SB3's ``ActorCriticPolicy`` actor (features extractor, ``mlp_extractor.policy_net``,
``action_net``, ``log_std``) with the same parameter names, so weights move between SB3's PPO and SPPO
(:meth:`SPPOPolicy.load_actor_state_dict`). The critic is a separate network with its own features
extractor and its own optimizer. It is only ever evaluated on the *start* observation of an episode and
predicts the episode's outcome through a pluggable :mod:`value head <sppo_rl.value_heads>`.

Aliases (as SB3): ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``.
"""

from __future__ import annotations

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


class SPPOPolicy(ActorCriticPolicy):
    """Actor (as SB3's ``ActorCriticPolicy``) plus a decoupled :class:`SequenceCritic`.

    Takes every argument of SB3's ``ActorCriticPolicy`` (``net_arch``, ``activation_fn``, ``ortho_init``,
    ``features_extractor_class``, ``optimizer_class``, ...) except gSDE, and:

    :param value_head: ``"bernoulli"`` (default), ``"gaussian"``, a :class:`~sppo_rl.value_heads.ValueHead`
        subclass or instance; ``"auto"`` builds a Bernoulli head that :class:`~sppo_rl.SPPO` replaces by the
        right one when it sees the first episode end
    :param value_head_kwargs: extra constructor arguments of the head

    ``net_arch`` is a list (the same hidden sizes for actor and critic) or ``dict(pi=[...], vf=[...])``
    where ``vf`` is the critic trunk. The actor's optimizer is ``self.optimizer`` (as SB3), the critic's is
    ``self.critic_optimizer``; both use ``optimizer_class`` and ``optimizer_kwargs``.
    """

    critic: SequenceCritic
    critic_optimizer: th.optim.Optimizer
    value_head_spec: ValueHeadSpec

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        value_head: ValueHeadSpec = "bernoulli",
        value_head_kwargs: dict[str, Any] | None = None,
        **unsupported: Any,
    ) -> None:
        if use_sde:
            raise ValueError("SPPO does not support gSDE (use_sde=True); use the default Gaussian exploration")
        if unsupported:
            hint = ""
            if "share_features_extractor" in unsupported:
                hint = " (the SPPO critic is decoupled: it never shares the actor's features extractor)"
            raise TypeError(f"SPPOPolicy got unsupported arguments: {', '.join(sorted(unsupported))}{hint}")
        self._set_value_head_spec(value_head)
        self.value_head_kwargs = dict(value_head_kwargs or {})
        if isinstance(value_head, str) and value_head != "auto":
            resolve_value_head_name(value_head)  # validates the type early
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            # SB3's eps, plus the multi-tensor implementation: about 25% less time per step on small MLPs
            optimizer_kwargs = {"eps": 1e-5, "foreach": True}
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=False,
            log_std_init=log_std_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=True,  # the actor's; the critic has its own (see _build)
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # ---- construction -----------------------------------------------------------------------------------

    def _set_value_head_spec(self, spec: ValueHeadSpec) -> None:
        # Bypass nn.Module.__setattr__: a head *instance* given as the spec must not be registered as a
        # second submodule (it lives in self.critic.head).
        object.__setattr__(self, "value_head_spec", spec)

    @property
    def actor_net_arch(self) -> list[int]:
        """Hidden sizes of the actor MLP."""
        return list(self.net_arch["pi"]) if isinstance(self.net_arch, dict) else list(self.net_arch)

    @property
    def critic_net_arch(self) -> list[int]:
        """Hidden sizes of the critic trunk."""
        return list(self.net_arch["vf"]) if isinstance(self.net_arch, dict) else list(self.net_arch)

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
        # A value_net attribute keeps SB3 code that looks for it working; it is the critic.
        self.value_net = self.critic  # type: ignore[assignment]
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
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("critic.", "value_net."))}

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

    # ---- evaluation ---------------------------------------------------------------------------------------

    def prepare_actions(self, actions: th.Tensor) -> th.Tensor:
        """Stored actions -> the form ``distribution.log_prob`` expects (long for ``Discrete``)."""
        if isinstance(self.action_space, spaces.Discrete):
            return actions.long().flatten()
        return actions

    def log_prob_and_entropy(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """Actor only: log-probabilities ``(n,)`` and entropies ``(n,)`` (or None) of ``actions``."""
        distribution = self.get_distribution(obs)
        return distribution.log_prob(self.prepare_actions(actions)), distribution.entropy()

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
