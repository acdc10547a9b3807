"""The report's five models and what the report measured for each.

``REPORTED[(model, split)]`` is the report's (top-1, top-2, top-3) test accuracy in percent, ``None``
where the report gives no figure. The ``svm400`` entry is the report's SVM on the 400x400x3 image.
"""

MODELS = ("cnn1d_raw", "cnn1d_mel", "cnn2d", "lstm", "svm")

REPORTED = {
    ("cnn1d_raw", "r70"): (51, 65, 79),
    ("cnn1d_mel", "r70"): (64, 79, 86),
    ("cnn2d", "r80"): (41, 59, 74),
    ("lstm", "r70"): (52, None, None),
    ("lstm", "r80"): (62, 78, 85),
    ("svm", "r80"): (64, None, None),
    ("svm400", "r80"): (48, None, None),
}
