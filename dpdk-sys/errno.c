#include <rte_errno.h>

int lsd_rte_errno(void) { return rte_errno; }
