"""Multi-task model merging as pure functions over parameter pytrees.

Every method takes the parameter trees of fine-tuned models (and the pretrained
base where the method needs it) and returns a merged tree. Trees are checked
first: a missing or extra parameter, a shape or dtype mismatch, or a NaN gets a
ValueError naming the parameter path. See docs/merging.md for conventions and
the comparison with fusion-bench.
"""

from jaxlab.merging.adamerging import AdaMerging
from jaxlab.merging.adamerging import AdaMergingState
from jaxlab.merging.adamerging import adamerging
from jaxlab.merging.adamerging import fit as fit_adamerging
from jaxlab.merging.adamerging import prediction_entropy
from jaxlab.merging.checks import check_parameter_trees
from jaxlab.merging.dare import dare_drop
from jaxlab.merging.dare import dare_masks
from jaxlab.merging.dare import dare_task_arithmetic
from jaxlab.merging.dare import dare_ties_merging
from jaxlab.merging.fisher import categorical_log_likelihood
from jaxlab.merging.fisher import diagonal_fisher
from jaxlab.merging.fisher import fisher_merging
from jaxlab.merging.fisher import fusion_bench_fisher_objective
from jaxlab.merging.regmean import flax_dense_inputs
from jaxlab.merging.regmean import gram_matrices
from jaxlab.merging.regmean import regmean_merging
from jaxlab.merging.task_arithmetic import apply_task_vectors
from jaxlab.merging.task_arithmetic import merge_task_vectors
from jaxlab.merging.task_arithmetic import task_arithmetic
from jaxlab.merging.task_arithmetic import task_vectors
from jaxlab.merging.task_arithmetic import weight_average
from jaxlab.merging.ties import ties_disjoint_merge
from jaxlab.merging.ties import ties_elect_sign
from jaxlab.merging.ties import ties_merge_task_vectors
from jaxlab.merging.ties import ties_merging
from jaxlab.merging.ties import ties_selected_task_vectors
from jaxlab.merging.ties import ties_trim
