"""mnist-curate: find unreadable and mislabelled MNIST digits and move them into an IDK class."""

__version__ = "0.1.0"
