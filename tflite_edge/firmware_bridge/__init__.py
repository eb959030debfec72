"""Microcontrollers as the first stage of the pipeline, over a serial link."""
