/* Decoding only a crop of a JPEG with the libjpeg API of libjpeg-turbo (effnetx_jax.data.decode).

   decode_crop(data, scale, left, top, right, bottom, out) -> offset decodes the box [top, bottom) x
   [left, right) of the image decoded at 1/scale (scale 1, 2, 4 or 8; the box is in pixels of that scaled
   image) as RGB into `out`, a writable C-contiguous buffer of (bottom - top) rows of W >= right - left +
   REGION_SLACK pixels of 3 bytes: libjpeg writes the decoded region (the box and a few columns either side)
   straight into those rows, and the box's columns are [offset, offset + right - left). Only the iMCU
   columns around the box go through IDCT, upsampling and colour conversion (jpeg_crop_scanline), the
   rows above it are skipped (jpeg_skip_scanlines) and reading stops after its last row. The settings are
   those of simplejpeg's decode_jpeg(fastdct=True) and of TensorFlow's decode_jpeg defaults: the fast
   integer IDCT (JDCT_IFAST) and fancy (interpolating) chroma upsampling.

   Any libjpeg error or warning met while decoding the rows read (a corrupt or truncated file: libjpeg
   would go on with grey rows, simplejpeg refuses it), and a CMYK/YCCK image (left to Pillow, which handles
   Adobe's inverted CMYK), raises ValueError. Damage below the crop's last row is never read. The GIL is
   released while decoding, so reader threads decode in parallel. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* Fancy upsampling interpolates chroma from the neighbouring chroma samples, so a column decoded at the
   edge of a cropped region sees a replicated edge instead of its real neighbour. Decoding this many extra
   pixels on each side (two chroma samples at 2x subsampling) keeps the box's own columns interior. */
#define MARGIN 4
/* The decoded region is at most this much wider than the box: MARGIN either side, and libjpeg moves its left
   edge down to an iMCU boundary (iMCUs are at most 32 pixels wide: 4x horizontal subsampling of 8x8 blocks). */
#define REGION_SLACK (2 * MARGIN + 31)

typedef struct {
    struct jpeg_error_mgr manager; /* first, so that libjpeg's pointer to it is a pointer to this */
    jmp_buf escape;
    char message[JMSG_LENGTH_MAX];
} ErrorState;

static void error_exit(j_common_ptr cinfo) {
    ErrorState *state = (ErrorState *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, state->message);
    longjmp(state->escape, 1);
}

/* A warning (msg_level -1) is corrupt data that libjpeg would paper over: treated as an error, as simplejpeg
   does, so that the caller can hand the file to Pillow. Trace messages (levels 0 and up) are dropped. */
static void emit_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) {
        error_exit(cinfo);
    }
}

typedef struct {
    const unsigned char *data;
    size_t size;
    int scale;
    JDIMENSION left, top, right, bottom;
    unsigned char *out;   /* (bottom - top) rows of `out_width` pixels */
    JDIMENSION out_width; /* at least the decoded region's width: right - left + REGION_SLACK */
    JDIMENSION offset;    /* set by decode: the column of `out` that holds image column `left` */
} CropRequest;

/* Rows asked of libjpeg per call: fewer calls through its row-group machinery than one at a time. */
#define ROWS_PER_CALL 16

/* Reads the rows [top, bottom) of the decoded region straight into the rows of `out`. */
static void read_rows(struct jpeg_decompress_struct *cinfo, const CropRequest *request) {
    size_t out_stride = (size_t)request->out_width * 3;
    JSAMPROW rows[ROWS_PER_CALL];
    while (cinfo->output_scanline < request->bottom) {
        JDIMENSION wanted = request->bottom - cinfo->output_scanline;
        JDIMENSION count = wanted < ROWS_PER_CALL ? wanted : ROWS_PER_CALL;
        unsigned char *first = request->out + (size_t)(cinfo->output_scanline - request->top) * out_stride;
        for (JDIMENSION i = 0; i < count; i++) {
            rows[i] = first + i * out_stride;
        }
        jpeg_read_scanlines(cinfo, rows, count);
    }
}

/* Decodes the request; returns 0, or -1 with `message` set. Touches no Python object (runs without the GIL). */
static int decode(CropRequest *request, char *message) {
    struct jpeg_decompress_struct cinfo;
    ErrorState errors;
    cinfo.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = error_exit;
    errors.manager.emit_message = emit_message;
    jpeg_create_decompress(&cinfo);
    if (setjmp(errors.escape)) {
        strcpy(message, errors.message);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_mem_src(&cinfo, request->data, (unsigned long)request->size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        strcpy(message, "CMYK and YCCK JPEGs are left to Pillow");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)request->scale;
    cinfo.dct_method = JDCT_IFAST;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if (request->right > cinfo.output_width || request->bottom > cinfo.output_height) {
        snprintf(message, JMSG_LENGTH_MAX, "the crop [%u, %u) x [%u, %u) is outside the %ux%u image",
                 request->left, request->right, request->top, request->bottom, cinfo.output_width,
                 cinfo.output_height);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    JDIMENSION region_left = request->left > MARGIN ? request->left - MARGIN : 0;
    JDIMENSION region_right = request->right + MARGIN < cinfo.output_width ? request->right + MARGIN
                                                                           : cinfo.output_width;
    JDIMENSION region_width = region_right - region_left;
    /* libjpeg moves the left edge down to an iMCU boundary and widens the region to match. */
    jpeg_crop_scanline(&cinfo, &region_left, &region_width);
    if (region_width > request->out_width) {
        snprintf(message, JMSG_LENGTH_MAX, "out is %u pixels wide, the decoded region %u", request->out_width,
                 region_width);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    request->offset = request->left - region_left;
    if (request->top > 0) {
        jpeg_skip_scanlines(&cinfo, request->top);
    }
    read_rows(&cinfo, request);
    /* The rows below the box are never read: abort instead of jpeg_finish_decompress. */
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

static PyObject *decode_crop(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer data, out;
    CropRequest request;
    char message[JMSG_LENGTH_MAX];
    if (!PyArg_ParseTuple(args, "y*iIIIIw*", &data, &request.scale, &request.left, &request.top, &request.right,
                          &request.bottom, &out)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (request.scale != 1 && request.scale != 2 && request.scale != 4 && request.scale != 8) {
        PyErr_Format(PyExc_ValueError, "scale must be 1, 2, 4 or 8, not %d", request.scale);
    } else if (request.right <= request.left || request.bottom <= request.top) {
        PyErr_Format(PyExc_ValueError, "the crop [%u, %u) x [%u, %u) is empty", request.left, request.right,
                     request.top, request.bottom);
    } else if (!PyBuffer_IsContiguous(&out, 'C') || out.len % ((Py_ssize_t)(request.bottom - request.top) * 3) ||
               (size_t)out.len / ((size_t)(request.bottom - request.top) * 3) <
                   (size_t)(request.right - request.left) + REGION_SLACK) {
        PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous buffer of height rows of at least "
                                          "width + REGION_SLACK pixels of 3 bytes");
    } else {
        request.data = data.buf;
        request.size = (size_t)data.len;
        request.out = out.buf;
        request.out_width = (JDIMENSION)(out.len / ((Py_ssize_t)(request.bottom - request.top) * 3));
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = decode(&request, message);
        Py_END_ALLOW_THREADS
        if (status == 0) {
            result = PyLong_FromUnsignedLong(request.offset);
        } else {
            PyErr_SetString(PyExc_ValueError, message);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_crop", decode_crop, METH_VARARGS,
     "decode_crop(data, scale, left, top, right, bottom, out) -> offset: decodes the RGB crop [top, bottom) x "
     "[left, right) of the JPEG `data` at 1/scale into the rows of the writable buffer `out` (bottom - top rows "
     "of at least right - left + REGION_SLACK pixels), where it starts at column `offset`; ValueError if libjpeg "
     "refuses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_jpeg_crop",
    .m_doc = "Crop-only JPEG decoding with libjpeg-turbo (see _jpeg_crop.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jpeg_crop(void) {
    PyObject *module = PyModule_Create(&module_definition);
    if (module != NULL && PyModule_AddIntConstant(module, "REGION_SLACK", REGION_SLACK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
