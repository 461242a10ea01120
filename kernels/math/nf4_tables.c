/* Host copies of the NF4 and double-quantisation code tables (values in
 * kernels/math/nf4.h; checked against the bitsandbytes fixture by
 * tests/unit/test_nf4_quant.c). */
#include "math/nf4.h"

const float ps_nf4_code[16] = PS_NF4_CODE_VALUES;
const float ps_dq_code[256] = PS_DQ_CODE_VALUES;
