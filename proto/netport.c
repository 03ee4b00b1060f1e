#include "netport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NETPORT_MIN 10000
#define NETPORT_SPAN_MIN 2000

static pthread_mutex_t netport_lock = PTHREAD_MUTEX_INITIALIZER;
static long netport_next = -1;

static void netport_range(int *lo, int *hi)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    int elo = 32768;
    int ehi = 60999;

    if (f != NULL) {
        if (fscanf(f, "%d %d", &elo, &ehi) != 2) {
            elo = 32768;
            ehi = 60999;
        }
        fclose(f);
    }
    if (elo - 1 - NETPORT_MIN >= NETPORT_SPAN_MIN) {
        *lo = NETPORT_MIN;
        *hi = elo - 1;
    } else {
        *lo = ehi + 1;
        *hi = 65535;
    }
}

static int netport_bindable(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok;

    if (fd < 0) {
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

int netport_free(int *ports, int n)
{
    int lo;
    int hi;
    long span;
    long tries;
    int got = 0;

    netport_range(&lo, &hi);
    span = hi - lo + 1;
    pthread_mutex_lock(&netport_lock);
    if (netport_next < 0) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        netport_next = ((long)getpid() * 7919 + ts.tv_nsec / 1000) % span;
    }
    /* The walk goes forward only, so a port is never handed out twice
     * until the whole range has been used. */
    for (tries = 0; tries < span && got < n; tries++) {
        int port = lo + (int)(netport_next % span);

        netport_next++;
        if (netport_bindable(port)) {
            ports[got++] = port;
        }
    }
    pthread_mutex_unlock(&netport_lock);
    return got == n ? 0 : -1;
}
