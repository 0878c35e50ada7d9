"""Files the package ships: the hand template (`template.py`, hand_template.npz, MIT, see
LICENSE-generic-hand.md), the trained model every entry point uses by default (model.tflite,
described in MODEL_CARD.md), and for full photos the hand detector and the side classifier that
names each found hand left or right (detector.tflite and side.tflite, described in
DETECTOR_CARD.md)."""

from pathlib import Path

SHIPPED_MODEL = Path(__file__).with_name("model.tflite")
SHIPPED_DETECTOR = Path(__file__).with_name("detector.tflite")
SHIPPED_SIDE = Path(__file__).with_name("side.tflite")
