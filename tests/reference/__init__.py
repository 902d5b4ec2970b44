"""Independent plain-NumPy references for polyvtd's tests: the weight codecs (codecs.py), the
layer maths (dense.py, swiglu.py, norm.py, embedding.py, kmeans.py) and finite differences
(gradcheck.py). Nothing here imports polyvtd."""
