"""The compiled CPU kernel (:mod:`echo_rnn.kernels.compiled`, a C extension built with the
package) and, later, the package's other kernels."""
