"""Independent plain-NumPy references for polyvtd's tests: the weight codecs (codecs.py) and the
dense layer maths (dense.py). Nothing here imports polyvtd."""
