"""The bundled DINO trainer (DETR with Improved DeNoising Anchor Boxes).

It speaks NVIDIA TAO's DINO contract: ``dino train -e spec.yaml key=value``, the TAO
train spec, ``<results_dir>/train/status.json`` and ``model_epoch_<EEE>_step_<S>.pth``
checkpoints. It knows nothing about Optuna.
"""

__version__ = "0.1.0"
