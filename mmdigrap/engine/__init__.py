"""The mmengine face: OptimWrappers (OPTIM_WRAPPERS), hooks (HOOKS) and runtime fixes."""
from .baseline_hooks import TPGMHook
from .baseline_wrappers import (
                                FixedDiGraPAmpOptimWrapper,
                                FixedDiGraPOptimWrapper,
                                FTPAmpOptimWrapper,
                                FTPOptimWrapper,
                                L2SPAmpOptimWrapper,
                                L2SPOptimWrapper,
                                SPDAmpOptimWrapper,
                                SPDOptimWrapper,
                                TPGMAmpOptimWrapper,
                                TPGMOptimWrapper,
)
from .checkpoint_hooks import ExactResumeHook  # noqa: F401  (registers ExactResumeHook)
from .digrap_val_hook import DiGraPValHook
from .fsdp_strategy import FSDP2Strategy
from .hooks import DiGraPHook, RobustFTHook, find_pretrained_source
from .optim_wrapper import (
                                CPUCompatibleAmpOptimWrapper,
                                DiGraPAmpOptimWrapper,
                                DiGraPOptimWrapper,
                                GradientProjectionOptimWrapperMixin,
                                RobustFTOptimWrapperConstructor,
                                register_method_wrappers,
)
from .runtime import enable_trusted_checkpoint_loading, setup_cpu_distributed
from .wise_ft import WiSEFTHook, interpolate_state_dicts

__all__ = [
    'RobustFTHook', 'DiGraPHook', 'RobustFTOptimWrapperConstructor', 'find_pretrained_source',
    'CPUCompatibleAmpOptimWrapper', 'DiGraPAmpOptimWrapper', 'DiGraPOptimWrapper',
    'GradientProjectionOptimWrapperMixin', 'register_method_wrappers',
    'enable_trusted_checkpoint_loading', 'setup_cpu_distributed', 'WiSEFTHook',
    'interpolate_state_dicts', 'TPGMHook', 'L2SPOptimWrapper', 'L2SPAmpOptimWrapper',
    'FTPOptimWrapper', 'FTPAmpOptimWrapper', 'SPDOptimWrapper', 'SPDAmpOptimWrapper',
    'TPGMOptimWrapper', 'TPGMAmpOptimWrapper', 'FixedDiGraPOptimWrapper',
    'FixedDiGraPAmpOptimWrapper', 'FSDP2Strategy', 'DiGraPValHook'
]
