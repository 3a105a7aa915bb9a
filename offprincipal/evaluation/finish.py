"""Which responses stopped at the generation budget rather than at EOS (the truncation flags).

lm-eval returns only the response text, and re-tokenising text does not recover how many
tokens were generated (byte-level BPE can re-encode to more or fewer tokens). So the two
backends are subclassed to look at what the engine produced: vLLM's ``finish_reason``
(``"length"`` = budget reached), and for ``transformers.generate`` whether the continuation
holds an EOS id and reached the budget. Each record is keyed by the response text exactly as
lm-eval post-processes it (``postprocess_generated_text``), so the result writer can look the
flag up for every response it scores; a response without a record is an error, not a guess.
The override points (``_model_generate``) are those of lm-eval 0.4.13, which the project pins.
"""

from __future__ import annotations

from collections import defaultdict


class FinishLog:
    """Truncation flags by response text; identical texts keep one flag each."""

    def __init__(self):
        self._flags: dict[str, list[bool]] = defaultdict(list)

    def add(self, text: str, truncated: bool) -> None:
        self._flags[text].append(bool(truncated))

    def pop(self, text: str) -> bool:
        flags = self._flags.get(text)
        if not flags:
            raise KeyError(f"no generation record for the response {text[:80]!r}")
        return flags.pop()

    def __len__(self) -> int:
        return sum(len(v) for v in self._flags.values())


def hf_truncated(continuation: list[int], budget: int, eos_ids: set[int]) -> bool:
    """A ``generate`` continuation hit the budget: no EOS id in it and ``budget`` tokens long."""
    return not any(t in eos_ids for t in continuation) and len(continuation) >= budget


def record_vllm_outputs(outputs, sampling_params, log: FinishLog) -> None:
    """Record each vLLM ``RequestOutput``'s flag (``finish_reason == "length"``) under its text."""
    from lm_eval.models.utils import postprocess_generated_text

    if not isinstance(sampling_params, list):
        sampling_params = [sampling_params] * len(outputs)
    for output, params in zip(outputs, sampling_params, strict=True):
        completion = output.outputs[0]
        text = postprocess_generated_text(completion.text, params.stop, None)
        log.add(text, completion.finish_reason == "length")


def neutral_generation_config(model) -> None:
    """Drop a checkpoint's sampling defaults (``generation_config.json``: e.g. Qwen's top_k 20 and
    repetition_penalty 1.05), keeping its special-token ids, so that ``generate`` samples with the
    suite's settings alone, as lm-eval's vLLM path does (it builds ``SamplingParams`` itself)."""
    from transformers import GenerationConfig

    old = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id)


def recording_hflm():
    """``HFLM`` subclass that fills ``finish_log`` on every generate call."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import postprocess_generated_text

    class RecordingHFLM(HFLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.think_end_token is not None:
                raise ValueError("truncation records do not support think_end_token (Evalchemy keeps the thinking)")
            self.finish_log = FinishLog()
            neutral_generation_config(self.model)
            ids = self.model.generation_config.eos_token_id
            ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
            self._eos_ids = {int(i) for i in ids} | {int(self.eot_token_id)}

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
            width = context.shape[1]
            for row in out.tolist():
                cont = row[width:]
                text = postprocess_generated_text(self.tok_decode(cont), stop, None)
                self.finish_log.add(text, hf_truncated(cont, max_length - width, self._eos_ids))
            return out

    return RecordingHFLM


def recording_vllm():
    """``VLLM`` subclass that fills ``finish_log`` on every generate call (imports vllm)."""
    from lm_eval.models.vllm_causallms import VLLM

    class RecordingVLLM(VLLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.think_end_token is not None:
                raise ValueError("truncation records do not support think_end_token (Evalchemy keeps the thinking)")
            self.finish_log = FinishLog()

        def _model_generate(self, requests, generate=False, sampling_params=None):
            outputs = super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
            if generate:
                record_vllm_outputs(outputs, sampling_params, self.finish_log)
            return outputs

    return RecordingVLLM
