"""Speaker encoders from ``speechbrain.lobes.models``, chosen by name.

The recipes' YAML builds its encoder with
``!apply:sb_angcl.encoders.build_encoder`` so that one top-level key
(``encoder: ecapa | resnet | xvector``) switches architectures from the
command line (``--encoder=resnet``). The encoders themselves are SpeechBrain's;
one width ``channels`` scales each of them:

=========  ==========================================  ====================
name       SpeechBrain class                            widths from ``C``
=========  ==========================================  ====================
ecapa      ``ECAPA_TDNN.ECAPA_TDNN``                    ``[C, C, C, C, 3C]``
resnet     ``ResNet.ResNet``                            ``[C/4, C/4, C/2, C/2]``
xvector    ``Xvector.Xvector``                          ``[C, C, C, C, 3C]``
=========  ==========================================  ====================

Each built module remembers its class path and arguments
(``module.sb_angcl_spec``), which :mod:`sb_angcl.export` writes into the
inference ``hyperparams.yaml`` as a plain ``!new:`` so that an exported model
needs only SpeechBrain to load.

Authors
 * sb-angcl contributors
"""

import importlib

ENCODERS = {
    "ecapa": "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN",
    "resnet": "speechbrain.lobes.models.ResNet.ResNet",
    "xvector": "speechbrain.lobes.models.Xvector.Xvector",
}


def encoder_arguments(name, input_size, emb_dim, channels, attention_channels=128):
    """Constructor arguments of a named encoder.

    Arguments
    ---------
    name : str
        ``ecapa``, ``resnet`` or ``xvector``.
    input_size : int
        Number of filterbank channels.
    emb_dim : int
        Embedding size.
    channels : int
        Width ``C`` (1024 for the paper's ECAPA-TDNN).
    attention_channels : int
        ECAPA-TDNN's pooling attention width.

    Returns
    -------
    dict

    Example
    -------
    >>> encoder_arguments("resnet", 80, 256, 512)["channels"]
    [128, 128, 256, 256]
    """
    c = int(channels)
    if name == "ecapa":
        return {
            "input_size": input_size,
            "channels": [c, c, c, c, 3 * c],
            "kernel_sizes": [5, 3, 3, 3, 1],
            "dilations": [1, 2, 3, 4, 1],
            "attention_channels": attention_channels,
            "lin_neurons": emb_dim,
        }
    if name == "resnet":
        return {
            "input_size": input_size,
            "channels": [c // 4, c // 4, c // 2, c // 2],
            "block_sizes": [3, 4, 6, 3],
            "strides": [1, 2, 2, 2],
            "lin_neurons": emb_dim,
        }
    if name == "xvector":
        return {
            "in_channels": input_size,
            "tdnn_channels": [c, c, c, c, 3 * c],
            "tdnn_kernel_sizes": [5, 3, 3, 1, 1],
            "tdnn_dilations": [1, 2, 3, 1, 1],
            "lin_neurons": emb_dim,
        }
    raise ValueError(
        f"encoder must be one of {sorted(ENCODERS)}, got {name!r} (set --encoder=ecapa)"
    )


def build_encoder(name, input_size, emb_dim, channels, attention_channels=128):
    """Build a SpeechBrain speaker encoder by name.

    Arguments
    ---------
    name : str
        ``ecapa``, ``resnet`` or ``xvector``.
    input_size : int
        Number of filterbank channels.
    emb_dim : int
        Embedding size.
    channels : int
        Width ``C``.
    attention_channels : int
        ECAPA-TDNN's pooling attention width.

    Returns
    -------
    torch.nn.Module
        Maps features ``[N, T, F]`` (and relative lengths) to ``[N, 1, emb_dim]``.

    Example
    -------
    >>> import torch
    >>> enc = build_encoder("xvector", 20, 8, 16)
    >>> enc(torch.randn(2, 50, 20)).shape
    torch.Size([2, 1, 8])
    >>> enc.sb_angcl_spec["class"]
    'speechbrain.lobes.models.Xvector.Xvector'
    """
    kwargs = encoder_arguments(name, input_size, emb_dim, channels, attention_channels)
    module_name, class_name = ENCODERS[name].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    encoder = cls(**kwargs)
    encoder.sb_angcl_spec = {"class": ENCODERS[name], "kwargs": kwargs}
    return encoder
