/*  test_barcode - GTIN check digits and weighed-item labels with two layouts */
#include <pos/barcode.h>
#include <string.h>
#include "testutil.h"

int main(void)
{
    CHECK(pos_ean13_check("4006381333931") == POS_OK, "EAN-13 4006381333931");
    CHECK(pos_ean13_check("5901234123457") == POS_OK, "EAN-13 5901234123457");
    CHECK(pos_ean13_check("6901234567892") == POS_OK, "EAN-13 6901234567892 (China prefix)");
    CHECK(pos_ean13_check("4006381333932") == POS_ECHECKDIGIT, "wrong check digit refused");
    CHECK(pos_ean13_check("400638133393") == POS_ELENGTH, "12 digits are not an EAN-13");
    CHECK(pos_ean13_check("40063813339a1") == POS_ESYNTAX, "letters refused");
    CHECK(pos_ean8_check("96385074") == POS_OK, "EAN-8 96385074");
    CHECK(pos_ean8_check("96385075") == POS_ECHECKDIGIT, "EAN-8 wrong check digit");
    CHECK(pos_upca_check("036000291452") == POS_OK, "UPC-A 036000291452");
    CHECK(pos_upca_check("036000291453") == POS_ECHECKDIGIT, "UPC-A wrong check digit");
    CHECK(pos_gtin_check("96385074") == POS_OK && pos_gtin_check("036000291452") == POS_OK &&
              pos_gtin_check("12345") == POS_ELENGTH,
          "any GTIN by length");
    CHECK(pos_gtin_check_digit("400638133393", 12) == 1, "check digit computed");

    pos_label_layout_t price;
    CHECK(pos_label_layout_init(&price, "PPIIIIIVVVVVC", NULL, POS_LABEL_PRICE) == POS_OK,
          "price layout 2+5+5");
    pos_label_t label;
    CHECK(pos_label_parse(&price, "2012345012349", &label) == POS_OK &&
              strcmp(label.item, "12345") == 0 && label.value == 1234 &&
              label.kind == POS_LABEL_PRICE,
          "price label: item 12345, 12.34 yuan");
    CHECK(pos_label_parse(&price, "2012345012348", &label) == POS_ECHECKDIGIT,
          "label with a wrong check digit refused");
    CHECK(pos_label_parse(&price, "6901234567892", &label) == POS_ERANGE,
          "a normal EAN-13 is not an in-store label");

    pos_label_layout_t weight;
    CHECK(pos_label_layout_init(&weight, "PIIIIIIVVVVVC", "2", POS_LABEL_WEIGHT) == POS_OK,
          "weight layout 1+6+5");
    CHECK(pos_label_parse(&weight, "2001234015004", &label) == POS_OK &&
              strcmp(label.item, "001234") == 0 && label.value == 1500 &&
              label.kind == POS_LABEL_WEIGHT,
          "weight label: item 001234, 1500 g");
    pos_label_layout_t only22;
    pos_label_layout_init(&only22, "PPIIIIIVVVVVC", "22,23", POS_LABEL_PRICE);
    CHECK(pos_label_parse(&only22, "2212345012343", &label) == POS_OK &&
              pos_label_parse(&only22, "2012345012349", &label) == POS_ERANGE,
          "a store's prefix list is honoured");
    CHECK(pos_label_layout_init(&weight, "PPIIIIIVVVVV1", NULL, POS_LABEL_PRICE) == POS_ESYNTAX &&
              pos_label_layout_init(&weight, "IPIIIIIVVVVVC", NULL, POS_LABEL_PRICE) ==
                  POS_ESYNTAX &&
              pos_label_layout_init(&weight, "PPIIIII", NULL, POS_LABEL_PRICE) == POS_ESYNTAX,
          "bad patterns refused");
    return FINISH("test_barcode");
}
