"""Detection: SSDLite on our backbones, COCO / embedded data and mAP, the detection search, TFLite export.

    >>> import detection
    >>> detector = detection.build_detector("mobilenet_v3_large", num_classes=80)      # 320 px SSDLite
    >>> data = detection.get_detection_dataset("embedded", image_size=128)             # offline shapes
    >>> detection.evaluate_detection(lambda x: detector(x, training=False), data, "valid", 32)["AP"]
    >>> supernet = detection.build_detection_supernet("mobilenet_v3_like", num_classes=10)
    >>> detection.mobilenet_v3_large_ssdlite_cost(320, 80)                            # default T0, ms

Modules: `anchors` (SSD anchors), `model` (SSDLite head, detector, decoding), `supernet`
(weight-sharing detector), `losses`, `data` / `synthetic` / `coco` / `datasets` (input
pipelines), `evaluation` (COCO mAP), `cost` (backbone + head latency), `config` / `tasks` (the
Trainer tasks behind `tools/train.py` and `tools/search.py --task=detection`), `export`
(TFLite with `TFLite_Detection_PostProcess`), `cli` (the tools' detection paths).
Names are imported on first use, so importing the package (as the tools do for their flags)
does not load Model Garden.
"""

import importlib

_EXPORTS = {
    "AnchorConfig": "detection.anchors",
    "SSD_ANCHORS": "detection.anchors",
    "multilevel_anchor_boxes": "detection.anchors",
    "num_anchors": "detection.anchors",
    "PostprocessConfig": "detection.model",
    "SSDLiteHead": "detection.model",
    "build_detector": "detection.model",
    "decode_detections": "detection.model",
    "DetectionSupernet": "detection.supernet",
    "build_detection_supernet": "detection.supernet",
    "detection_loss": "detection.losses",
    "get_detection_dataset": "detection.datasets",
    "evaluate_detection": "detection.evaluation",
    "DetectionEvaluator": "detection.evaluation",
    "DetectionCostModel": "detection.cost",
    "mobilenet_v3_large_ssdlite_cost": "detection.cost",
    "export_detector": "detection.export",
    "run_detection_training": "detection.tasks",
    "run_detection_search": "detection.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detection' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
