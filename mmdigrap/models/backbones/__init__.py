"""Backbones mmpretrain lacks, registered in mmpretrain's ``MODELS`` on import."""
from .mnist_cnn import MNISTCNN, convert_digit_recognizer, default_digit_recognizer_path

__all__ = ['MNISTCNN', 'convert_digit_recognizer', 'default_digit_recognizer_path']
