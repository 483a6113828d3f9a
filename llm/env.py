"""``PromptEnv``: prompt -> response as a one-step gymnasium environment.

``reset()`` draws a prompt (the observation is its text; ``info`` holds the dataset row, its index and the chat
messages); ``step(response_text)`` scores the response with the verifier and ends the episode
(``terminated=True``), with the parsed answer and the correctness in ``info`` (``info["is_success"]``, which
SB3 logs as ``rollout/success_rate``). This is the sequence-level contextual bandit of SPPO: context = prompt,
action = the whole response, reward = the outcome.

The trainer does not step the environment one prompt at a time; it uses the same dataset and verifier in
batches (:attr:`PromptEnv.dataset`, :attr:`PromptEnv.rewards`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .data import PromptDataset, PromptSampler, load_prompt_dataset
from .rewards import RewardRunner, Verifier, make_reward

__all__ = ["PromptEnv", "TextSpace"]


class TextSpace(gym.spaces.Text):
    """A text space that accepts any string up to ``max_length`` characters (no character set restriction)."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


class PromptEnv(gym.Env[str, str]):
    """One-step environment over a prompt dataset, scored by a verifier.

    :param dataset: a :class:`~sppo_rl.llm.data.PromptDataset` or any source of
        :func:`~sppo_rl.llm.data.load_rows` (path, ``"reasoning_gym:<task>"``, list of dicts)
    :param reward: a verifier, a TRL-style reward function, a name for
        :func:`~sppo_rl.llm.rewards.make_reward`, or a :class:`~sppo_rl.llm.rewards.RewardRunner`
    :param tokenizer: if given, observations are rendered with its chat template (otherwise plain text)
    :param chat_template: see :func:`~sppo_rl.llm.data.render_messages`
    :param shuffle: draw prompts in reshuffled epochs (otherwise in order)
    :param timeout_s: verifier timeout (when ``reward`` is not already a runner)
    :param max_length: ``max_length`` of the text spaces
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: PromptDataset | Any,
        reward: Verifier | RewardRunner | Any = "exact_match",
        tokenizer: Any = None,
        chat_template: bool | str = "auto",
        shuffle: bool = True,
        timeout_s: float | None = 10.0,
        max_length: int = 1_000_000,
    ) -> None:
        super().__init__()
        self.dataset: PromptDataset = load_prompt_dataset(dataset)
        if isinstance(reward, RewardRunner):
            self.rewards = reward
        else:
            verifier = make_reward(reward) if isinstance(reward, str) else reward
            self.rewards = RewardRunner(verifier, timeout_s=timeout_s)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.observation_space = TextSpace(max_length)
        self.action_space = TextSpace(max_length)
        self._sampler = PromptSampler(len(self.dataset), seed=0, shuffle=shuffle)
        self._index: int | None = None
        self._prompt: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Draw a prompt.

        :param seed: reseeds the prompt order
        :param options: ``{"index": i}`` picks row ``i``
        :return: ``(prompt_text, {"index", "row", "messages"})``
        """
        super().reset(seed=seed)
        if seed is not None:
            self._sampler = PromptSampler(len(self.dataset), seed=seed, shuffle=self._sampler.shuffle)
        if options and "index" in options:
            index = int(options["index"])
            if not 0 <= index < len(self.dataset):
                raise IndexError(f"index {index} out of range for {len(self.dataset)} prompts")
        else:
            index = self._sampler.next(1)[0]
        self._index = index
        messages = self.dataset.messages(index)
        self._prompt = self.dataset.prompt_text(index, self.tokenizer, self.chat_template)
        return self._prompt, {"index": index, "row": self.dataset[index], "messages": messages}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score the response; the episode ends.

        :param action: the response text
        :return: ``("", reward, True, False, info)`` with ``info["is_success"]``, ``info["parsed_answer"]``,
            ``info["verifier_failure"]`` (``None`` or the reason of a default 0), ``info["index"]``
        :raises RuntimeError: ``step`` without a prompt (call ``reset`` first)
        """
        if self._index is None or self._prompt is None:
            raise RuntimeError("PromptEnv.step() called without a prompt: call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"The action must be the response text (str), got {type(action).__name__}")
        scored = self.rewards.score([self._prompt], [action], [self.dataset[self._index]])
        info = {
            "is_success": bool(scored.success[0]),
            "parsed_answer": scored.parsed[0],
            "verifier_failure": scored.failures[0],
            "index": self._index,
        }
        self._index = None
        self._prompt = None
        return "", float(np.float64(scored.rewards[0])), True, False, info
