"""Pairwise, criterion-wise evaluation of decoding methods (P-Soups protocol), win rates and the report."""
