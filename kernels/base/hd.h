/* PS_HD marks per-element math shared by the C backend and CUDA kernels:
 * __host__ __device__ under nvcc, nothing in plain C. */
#ifndef PS_BASE_HD_H
#define PS_BASE_HD_H
#ifdef __CUDACC__
#define PS_HD __host__ __device__
#else
#define PS_HD
#endif
#endif
