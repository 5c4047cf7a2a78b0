/* A stand-in for NVML (libnvidia-ml.so.1): the GPU at bus 41 is in MIG mode with two instances. */
#include <string.h>
#include <stdio.h>
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **h) { *h = (void *)(strstr(bus, "41") ? 2L : 1L); return 0; }
int nvmlDeviceGetMigMode(void *h, unsigned *cur, unsigned *pend) { *cur = ((long)h == 2); *pend = *cur; return 0; }
int nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned *n) { *n = 7; return 0; }
int nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned i, void **m) { if (i > 1) return 6; *m = (void *)(100L + i); return 0; }
int nvmlDeviceGetUUID(void *m, char *buf, unsigned len) { snprintf(buf, len, "MIG-%ld-uuid", (long)m); return 0; }
