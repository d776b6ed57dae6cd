# DiGraP variant (docs/algorithm.md section 14.2, not the paper): omega's hyper-gradient from a
# held-out ID validation batch (as TPGM trains its radii) instead of the training batch:
# h_t = Norm(g_val, P_{t-1}), so omega rises when the projection lowers the validation loss.
# DiGraPValHook supplies the batches (default: the run's val_dataloader; pass
# dataloader=dict(...) for a separate held-out split). Costs one forward/backward on a val
# batch every `interval` optimizer steps.
_base_ = ['./digrap.py']
optim_wrapper = dict(digrap=dict(hypergrad_source='val'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50),
                dict(type='DiGraPValHook', interval=1)]
