"""dlib's CC0 face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) rebuilt for TFLite.

``dat`` reads dlib's serialisation without dlib, ``net`` rebuilds the network in PyTorch,
``build`` converts it and records the files in ``models/manifest.json``, ``reference``
compares the result with dlib itself. Run ``python -m tools.dlib_resnet --help``.
"""
