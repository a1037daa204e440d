"""fastnn: fast CPU training of multilayer perceptrons."""
__version__ = "0.1.0"
