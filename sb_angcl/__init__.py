"""sb-angcl: angular-margin supervised contrastive learning for SpeechBrain.

Implements the training objective of Li, Mak & Meng (ICASSP 2023),
"Discriminative Speaker Representation via Contrastive Learning with
Class-Aware Attention in Angular Space" (arXiv 2210.16622).
"""

__version__ = "0.1.0"
