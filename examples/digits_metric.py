"""A user metric plugin as a user would write one: outputs and labels in, one score per sample out."""

import numpy as np


def correct(outputs, labels):
    return (np.argmax(outputs[0], axis=1) == labels).astype(float)
