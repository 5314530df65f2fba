/* entry_null.c -- a4ps_plugin_entry returns NULL: the plugin refuses to
 * load (rule R4 allows it; the kernel must report it, not dereference it). */
#include "tp_common.h"

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return NULL;
}
