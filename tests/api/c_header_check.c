/* rcpg's headers must be usable from C (compiled with -Wall -Wextra). */
#include <corosync/cpg.h>

int rcpg_c_header_check(void) {
  struct cpg_name n = {0};
  struct cpg_address a = {0};
  cpg_model_v1_data_t md = {CPG_MODEL_V1, 0, 0, 0, CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF};
  (void)md;
  (void)n;
  (void)a;
  return (int)(sizeof(n) + sizeof(a));
}
