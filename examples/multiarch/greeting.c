/* Says which architecture it was compiled for, and on which machine it was built
   (built.h, written by the build's shared step). */
#include <stdio.h>

#include "built.h"

#if defined(__aarch64__)
#define ARCH "aarch64"
#elif defined(__x86_64__)
#define ARCH "x86_64"
#else
#define ARCH "an unknown architecture"
#endif

int main(void)
{
    printf("Hello from %s! (compiled on %s)\n", ARCH, BUILT_ON);
    return 0;
}
