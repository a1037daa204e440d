"""fastnn's compiled kernels (Cython + OpenMP). Internal: the kernels trust their inputs;
validation happens in the Python API (fastnn.*)."""
