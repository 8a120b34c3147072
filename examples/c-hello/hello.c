/* The tutorial's hello world (app.go there), in C: Debian's gcc builds it offline. */
#include <stdio.h>

int main(void)
{
    printf("Hello World!\n");
    return 0;
}
