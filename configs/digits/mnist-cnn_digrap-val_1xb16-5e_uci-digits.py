# DiGraP with omega's hyper-gradient on held-out ID batches (docs/algorithm.md section 14.2, not
# the paper): DiGraPValHook takes them from the run's val_dataloader (the 300 UCI val digits,
# disjoint from train and test; TPGM trains its radii on the same batches).
# Knobs: --cfg-options optim_wrapper.digrap.mu=0.1 optim_wrapper.digrap.project=update
_base_ = ['./mnist-cnn_digrap_1xb16-5e_uci-digits.py']
optim_wrapper = dict(digrap=dict(hypergrad_source='val'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50),
                dict(type='DiGraPValHook', interval=1)]
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP-val')
