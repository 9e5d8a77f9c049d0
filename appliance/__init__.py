"""Evidence appliance: takes recordings off body-worn cameras and keeps them as evidence."""

__version__ = "0.1.0"
