"""Pure functions: tensors in, numbers out. Nothing in this package reads or writes files."""
