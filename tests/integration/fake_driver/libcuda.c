/* A stand-in for the CUDA driver API (libcuda.so.1): three GPUs, CUDA-ordered fastest first, the second in MIG mode. */
#include <string.h>
#include <stdio.h>
static const char *bus[3] = {"0000:C1:00.0", "0000:41:00.0", "0000:01:00.0"};
static const char *names[3] = {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "Tesla T4"};
int cuInit(unsigned int f) { return 0; }
int cuDeviceGetCount(int *n) { *n = 3; return 0; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
int cuDeviceGetName(char *name, int len, int d) { strncpy(name, names[d], len); return 0; }
int cuDeviceGetPCIBusId(char *b, int len, int d) { strncpy(b, bus[d], len); return 0; }
int cuDeviceGetUuid(unsigned char *u, int d) { for (int i = 0; i < 16; i++) u[i] = (unsigned char)(d * 16 + i); return 0; }
int cuDeviceGetUuid_v2(unsigned char *u, int d) { for (int i = 0; i < 16; i++) u[i] = (unsigned char)(d * 16 + i + (d == 1 ? 0x80 : 0)); return 0; }
