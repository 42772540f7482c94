"""The ``fixative`` command line.

It turns words into the library's typed options and maps the library's errors to its flags.
"""
