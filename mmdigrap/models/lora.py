"""``FullStateLoRAModel``: mmpretrain's ``LoRAModel`` with complete checkpoints that also load a
plain (unwrapped) model's checkpoint.

Source: ``mmpretrain/models/peft/lora.py`` (mmpretrain 1.2.0). There, ``LoRAModel(module=...)``
builds the module, replaces every target ``nn.Linear`` by a ``LoRALinear`` (the frozen layer
as ``original_layer`` + ``lora_down`` (A, rank x in, Kaiming-uniform) and ``lora_up`` (B,
out x rank, zeros), ``y = W0 x + (alpha / rank) * B A dropout(x)``), and freezes every
parameter whose name lacks ``.lora_`` -- the head included. Its checkpoints, though:

* save only the adapters (a state-dict hook drops every other key), so a checkpoint is useless
  without the very same base weights rebuilt around it (a linear-probed head is lost);
* name every key ``module.<name>`` and a replaced layer's weights
  ``module.<name>.original_layer.weight``, so a plain model's checkpoint (a linear probe:
  ``backbone.layers.0.attn.qkv.weight``, ``head.fc.weight``) matches no key -- and its
  load post-hook deletes every non-adapter key from the missing / unexpected lists, so
  ``load_from=<plain checkpoint>`` loads nothing and says nothing;
* do not survive mmengine's ``Runner.load_checkpoint``, which strips ``^module.`` from every
  key (``revise_keys``): ``module.x.lora_down.weight`` becomes ``x.lora_down.weight``, matches
  nothing, and the adapters stay at their initialisation (``tools/test.py`` then tests the
  un-adapted model, with a warning only).

:class:`FullStateLoRAModel` is the same model (same parameters, names, forward, trainable set)
with a complete state dict (every tensor, the frozen ones included, under LoRAModel's names)
and a loader that maps three spellings of a key onto those names (:meth:`wrapped_key`): its
own, its own with ``module.`` stripped, and the plain model's. A plain checkpoint therefore
loads every weight of the model it came from, and the adapters keep their initialisation:
``lora_up = 0``, so the wrapped model computes exactly the loaded one. Real mismatches are
still reported (strict loading raises on them). Attribute access falls through to the wrapped
module, submodules included (``model.data_preprocessor``; LoRAModel's ``__getattr__`` misses
those).

Config (the module's usual config goes under ``module``)::

    model = dict(type='FullStateLoRAModel', module=dict(type='ImageClassifier', ...),
                 alpha=16, rank=8, drop_rate=0.05,
                 targets=[dict(type=r'backbone\\.layers\\.\\d+\\.attn\\.(qkv|proj)')])
"""
from typing import Iterable, List, Mapping, Optional

from mmengine.logging import print_log
from mmpretrain.models.peft import LoRAModel
from mmpretrain.models.peft.lora import LoRALinear
from mmpretrain.registry import MODELS
from torch import nn

__all__ = ['FullStateLoRAModel', 'ADAPTER_TAG', 'is_adapter_key']

#: the substring of every adapter parameter's name (LoRAModel's own test for "trainable")
ADAPTER_TAG = '.lora_'
_WRAP = 'module.'


def is_adapter_key(key: str) -> bool:
    """True for a LoRA adapter tensor's name (``...lora_down.weight`` / ``...lora_up.weight``)."""
    return ADAPTER_TAG in key


@MODELS.register_module()
class FullStateLoRAModel(LoRAModel):
    """mmpretrain's ``LoRAModel`` whose state dict holds every tensor and whose loader accepts a
    plain model's checkpoint (module docstring).

    Args:
        module: config of the model to adapt (e.g. an ``ImageClassifier``); built, then
            ``init_weights()`` (its ``Pretrained`` init_cfgs load), then the LoRA layers are
            inserted, as in LoRAModel.
        alpha: LoRA scale numerator (scaling = alpha / rank).
        rank: LoRA rank r (> 0).
        drop_rate: dropout on the adapters' input (training only).
        targets: ``[dict(type=<regex or suffix>, [alpha, rank, drop_rate])]``, matched with
            ``re.fullmatch`` or ``str.endswith`` on the module's submodule names; only
            ``nn.Linear`` layers are replaced.
        data_preprocessor: mmengine's Runner passes the config's top-level
            ``data_preprocessor`` to the model it builds; it is given to ``module`` when the
            module config has none (LoRAModel itself would refuse the argument).

    Raises:
        ValueError: no target matched a Linear layer (LoRAModel's check).
    """

    def __init__(self, module: dict, alpha: int = 1, rank: int = 0, drop_rate: float = 0.,
                 targets: Iterable[dict] = (), data_preprocessor: Optional[dict] = None):
        if data_preprocessor is not None and isinstance(module, Mapping) and \
                module.get('data_preprocessor') is None:
            module = dict(module, data_preprocessor=data_preprocessor)
        super().__init__(module, alpha=alpha, rank=rank, drop_rate=drop_rate,
                         targets=list(targets))
        self._source_had_adapters = True
        #: names (inside ``module``) of the layers LoRA replaced, e.g. 'backbone.layers.0.attn.qkv'
        self.lora_layers = frozenset(n for n, m in self.module.named_modules()
                                     if isinstance(m, LoRALinear))

    def __getattr__(self, name: str):
        """Attributes of the wrapped module, its submodules and parameters included
        (``model.data_preprocessor``, ``model.head``): LoRAModel delegates with
        ``module.__getattribute__``, which finds neither."""
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            inner = self.__dict__.get('_modules', {}).get('module')
            if inner is None:
                raise
            return getattr(inner, name)

    # ------------------------------------------------------------------ state dict
    def _register_state_dict_hooks(self):
        """Replaces LoRAModel's hooks (adapters-only saving, silent loading): the state dict
        stays complete; loading maps the keys (:meth:`wrapped_key`)."""
        self.register_load_state_dict_pre_hook(self._map_keys_pre_hook)
        self.register_load_state_dict_post_hook(self._missing_adapters_post_hook)

    def wrapped_key(self, key: str) -> str:
        """This model's name for ``key`` (relative to this model, no prefix).

        * ``module.<name>`` (this model's own spelling): unchanged;
        * ``<name>`` of a replaced layer's weight or bias (a plain model's key, e.g.
          ``backbone.layers.0.attn.qkv.weight``) -> ``module.<layer>.original_layer.weight``;
        * any other ``<name>`` (a plain model's other keys, or this model's keys with
          ``module.`` stripped, as mmengine's ``Runner.load_checkpoint`` does) ->
          ``module.<name>``.
        """
        if key.startswith(_WRAP):
            return key
        owner, _, leaf = key.rpartition('.')
        if owner in self.lora_layers and leaf in ('weight', 'bias'):
            return f'{_WRAP}{owner}.original_layer.{leaf}'
        return _WRAP + key

    def _map_keys_pre_hook(self, module, state_dict, prefix, *args):
        ours = [k for k in list(state_dict) if k.startswith(prefix)]
        for key in ours:
            new = prefix + self.wrapped_key(key[len(prefix):])
            if new == key:
                continue
            value = state_dict.pop(key)
            if new not in state_dict:  # the own spelling wins if a file has both
                state_dict[new] = value
        self._source_had_adapters = any(
            is_adapter_key(k) for k in state_dict if k.startswith(prefix))

    def _missing_adapters_post_hook(self, module, incompatible_keys):
        """A checkpoint with no adapter at all (a plain model's) is complete for this model:
        its adapters keep their initialisation (lora_up = 0). Said once, not as missing keys."""
        if self._source_had_adapters:
            return
        missing: List[str] = incompatible_keys.missing_keys
        adapters = [k for k in missing if is_adapter_key(k)]
        for k in adapters:
            missing.remove(k)
        if adapters:
            print_log(f'FullStateLoRAModel: the checkpoint has no LoRA adapters (a plain '
                      f"model's): {len(adapters)} adapter tensors keep their initialisation "
                      '(lora_up = 0, so the model computes the loaded one)', logger='current')
        self._source_had_adapters = True
