"""The three serving architectures (colocated, chunked, disaggregated), the closed-loop model, and what they share
(common: the decode-batch fixed point and the TPOT tail)."""
