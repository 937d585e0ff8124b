"""Realistic Duimps for the Portal simulator, shaped exactly like the Portal's consultation answer
(``shared/reference/duimp-consulta-response.example.json``: same keys, same nesting, same types).

Everything is derived from the Duimp number (and version), so the event emitter and the Duimp
query agree without sharing state: ``duimp(numero, versao)`` gives the same answer in any process.
Numbers look like ``24BR0000012345``: two-digit year, ``BR``, ten or eleven digits.
"""

from __future__ import annotations

import hashlib
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

DUIMP_NUMBER = re.compile(
    r"(?P<year>[0-9]{2})BR(?P<seq>[0-9]{10,11})"
)  # fullmatch: "$" allows "\n"
MAX_VERSION = 99

# (NCM, description, unit, net kg per unit, unit price USD, II %, IPI %)
_PRODUCTS = [
    ("84713012", "Notebook com tela de 14 polegadas", "UNIDADE", 1.6, 610.0, 16.0, 0.0),
    ("85176259", "Roteador de rede sem fio", "UNIDADE", 0.4, 48.0, 16.0, 9.75),
    ("39269090", "Artefato de plástico para embalagem", "QUILOGRAMA LIQUIDO", 1.0, 3.1, 18.0, 6.5),
    ("87089990", "Parte de suspensão para veículos", "UNIDADE", 2.3, 21.5, 18.0, 3.25),
    ("30049099", "Medicamento em doses para venda a retalho", "CAIXA", 0.2, 12.0, 8.0, 0.0),
    ("22042100", "Vinho tinto em recipientes até 2 litros", "LITRO", 1.3, 6.4, 27.0, 6.5),
    ("64039190", "Calçado de couro natural", "PAR", 0.9, 34.0, 35.0, 0.0),
    ("90189099", "Instrumento médico-hospitalar", "UNIDADE", 0.7, 88.0, 12.0, 0.0),
]
_PORTS = [  # (unidade aduaneira, UF, recinto, via de transporte, conhecimento)
    ("0817600", "SP", "8931356", "01", ("12", "BL - Conhecimento de embarque marítimo")),
    ("0817700", "SP", "8911101", "04", ("31", "AWB - Conhecimento de transporte aéreo")),
    ("0927800", "PR", "9801303", "01", ("12", "BL - Conhecimento de embarque marítimo")),
    ("0717700", "RJ", "7911101", "04", ("31", "AWB - Conhecimento de transporte aéreo")),
]
_COUNTRIES = ["CN", "US", "DE", "IT", "JP", "KR", "AR", "FR"]
_COMPANIES = [
    ("Comércio Importadora Atlântico Ltda", "SP"),
    ("Distribuidora Paranaense de Eletrônicos S.A.", "PR"),
    ("Farmacêutica Guanabara Ltda", "RJ"),
    ("Vinícola e Importadora Serra Gaúcha Ltda", "RS"),
    ("Autopeças Minas Importação Ltda", "MG"),
]
_CURRENCY_USD, _CURRENCY_EUR = 220, 978  # BACEN currency codes
_USD_BRL = 5.42
_TAXES = [  # (code, name, receita)
    ("1", "II", "0086"),
    ("2", "IPI", "1038"),
    ("6", "PIS-IMPORTAÇÃO", "5602"),
    ("7", "COFINS-IMPORTAÇÃO", "5629"),
]
_PIS, _COFINS = 2.10, 9.65


def is_duimp_number(numero: str) -> bool:
    return bool(DUIMP_NUMBER.fullmatch(numero))


def duimp_number(sequence: int, year: int = 24) -> str:
    """The Duimp number for a sequence, e.g. ``duimp_number(12345) == "24BR0000012345"``."""
    return f"{year % 100:02d}BR{sequence % 10**10:010d}"


def _rng(numero: str, *salt: object) -> random.Random:
    seed = hashlib.sha256("|".join([numero, *map(str, salt)]).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def latest_version(numero: str) -> int:
    """The version in force when nobody asked for a later one: 1 or 2 (a rectification)."""
    return 1 + (_rng(numero, "versions").random() < 0.3)


def _cnpj(rng: random.Random) -> str:
    digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(7)] + [0, 0, 0, 1]
    for weights in ([5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]):
        total = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
        digits.append(0 if total < 2 else 11 - total)
    return "".join(map(str, digits))


def _cpf(rng: random.Random) -> str:
    digits = [rng.randint(0, 9) for _ in range(9)]
    for length in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(length + 1, 1, -1), strict=True)) % 11
        digits.append(0 if total < 2 else 11 - total)
    return "".join(map(str, digits))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _money(value: float) -> float:
    return round(value, 2)


def _code(codigo: str, descricao: str) -> dict[str, str]:
    return {"codigo": codigo, "descricao": descricao}


def _tax_calc(code: str, name: str, base: float, rate: float) -> dict[str, Any]:
    due = _money(base * rate / 100)
    return {
        "imposto": _code(code, name),
        "fundamentoLegalNormal": _code("1", "Tributação normal"),
        "valorBaseCalculo": base,
        "valorBaseCalculoEspecifica": 0,
        "valorBaseCalculoReduzida": 0,
        "percReducaoBaseCalculo": 0,
        "tipoAliquota": _code("1", "Ad valorem"),
        "valorAliquota": rate,
        "valorAliquotaEspecifica": 0,
        "valorAliquotaReduzida": 0,
        "percReducaoAliquotaReduzida": 0,
        "valorCalculado": due,
        "valorAReduzir": 0,
        "valorDevido": due,
        "valorSuspenso": 0,
        "impostoARecolher": due,
        "valorNormal": due,
        "indicadorTributado": 1,
    }


def _item(
    rng: random.Random, number: int, importer: tuple[str, str, str], country: str, version: int
) -> dict[str, Any]:
    ncm, description, unit, kg, price, ii, ipi = rng.choice(_PRODUCTS)
    quantity = rng.randint(10, 400) + (version - 1) * 5  # a rectification changes quantities
    value_usd = _money(quantity * price)
    freight, insurance = _money(value_usd * 0.06), _money(value_usd * 0.005)
    customs_brl = _money((value_usd + freight + insurance) * _USD_BRL)
    rates = [ii, ipi, _PIS, _COFINS]
    calcs = [
        _tax_calc(code, name, customs_brl, rate)
        for (code, name, _), rate in zip(_TAXES, rates, strict=True)
    ]
    return {
        "caracterizacaoImportacao": {
            "numeroItem": f"{number:05d}",
            "indicadorImportacaoTerceiros": 0,
            "cnpjAdquirente": importer[0],
            "ufAdquirente": importer[2],
            "nomeAdquirente": importer[1],
        },
        "dadosProduto": {
            "codigoProduto": str(rng.randint(1, 999_999)),
            "versaoProduto": str(rng.randint(1, 4)),
            "cnpjProduto": importer[0][:8],
            "codigoNCM": ncm,
            "paisOrigem": country,
        },
        "dadosExportadorExtrangeiro": {
            "relacaoExportadorFabricante": "EXPORTADOR_E_FABRICANTE",
            "vinculacaoCompradorVendedor": "NAO_HA_VINCULACAO",
            "codigoOperadorExportador": f"{country}{rng.randint(100000, 999999)}",
            "paisOperadorExportador": country,
        },
        "informacoesComplementares": {
            "atributosDinamicos": [{"codigo": "ATT_0001", "valor": str(rng.randint(1, 3))}],
            "descricaoComplementarMercadoria": description,
        },
        "declaracoesExportacaoExtrangeira": [
            {
                "tipoCertificadoMercosul": "NENHUM",
                "numeroCertificado": "",
                "quantidadeUnidadeEstatisticaCertificado": 0,
            }
        ],
        "declaracoesAduaneiraVinculadas": [
            {"tipo": "DI", "numero": f"{rng.randint(10**9, 10**10 - 1)}", "numeroItem": "001"}
        ],
        "condicaoVendaMercadoria": {
            "metodoValoracao": 1,
            "incoterm": "FOB",
            "incotermComplemento": "",
            "acrescimosDeducoes": [
                {
                    "tipoOperacao": 1,
                    "codigo": 16,
                    "valor": freight,
                    "valorReal": _money(freight * _USD_BRL),
                    "textoComplementar": "Frete internacional",
                    "moeda": _CURRENCY_USD,
                }
            ],
        },
        "dadosCambiais": {
            "coberturaCambial": 1,
            "instituicaoFinanceira": 1,
            "valorCoberturaCambial": value_usd,
            "numeroROFBacen": "",
            "motivoSemCobertura": "",
        },
        "itemTributo": {
            "valorMercadoria": {
                "valorMercadoria": value_usd,
                "valorFreteRateado": freight,
                "valorSeguroRateado": insurance,
                "valorAduaneiro": customs_brl,
            },
            "tributosAplicados": [
                {
                    "tributo": _code(code, name),
                    "regime": _code("1", "Recolhimento integral"),
                    "fundamentoLegal": _code("0", "Sem fundamento legal específico"),
                    "atributosDinamicos": [
                        {
                            "codigo": "ATT_TRIB_0001",
                            "valor": "1",
                            "descricao": "Tipo de recolhimento",
                            "tipoAtributo": "LISTA_ESTATICA",
                            "tipoCampoAdicional": "NENHUM",
                        }
                    ],
                }
                for code, name, _ in _TAXES
            ],
            "calculosTributos": calcs,
            "dadosMercadoria": {
                "tipoAplicacao": 1,
                "condicao": 1,
                "quantidadeUnidadeEstatistica": quantity,
                "pesoLiquido": _money(quantity * kg),
                "unidadeComercializada": unit,
                "quantidadeUnidadeComercializada": quantity,
                "moedaNegociada": _CURRENCY_USD,
                "valorUnitarioCondicaoVenda": price,
                "valorMercadoriaCondicaoVendaMoedaNegociada": value_usd,
                "valorMercadoriaCondicaoVendaReal": _money(value_usd * _USD_BRL),
            },
        },
    }


def duimp(numero: str, versao: int | None = None) -> dict[str, Any] | None:
    """The Duimp ``numero`` as the consultation answers it (``versao`` None: the one in force);
    None when the number is not a Duimp number or the version is out of range."""
    found = DUIMP_NUMBER.fullmatch(numero)
    if found is None:
        return None
    version = latest_version(numero) if versao is None else versao
    if not 1 <= version <= MAX_VERSION:
        return None
    rng = _rng(numero)
    year = 2000 + int(found["year"])
    created = datetime(year, 1, 1, 8, tzinfo=UTC) + timedelta(
        days=rng.randint(0, 330), minutes=rng.randint(0, 600)
    )
    registered = created + timedelta(hours=rng.randint(1, 30))
    arrival = registered - timedelta(days=rng.randint(0, 5), hours=rng.randint(1, 12))
    in_force = max(version, latest_version(numero))
    rectified = registered + timedelta(hours=20 * (in_force - 1))
    company, uf = rng.choice(_COMPANIES)
    cnpj = _cnpj(rng)
    importer = (cnpj, company, uf)
    ua, ua_uf, recinto, via, (doc_type, doc_desc) = rng.choice(_PORTS)
    country = rng.choice(_COUNTRIES)
    channel = rng.choices([1, 2, 3, 4], weights=[70, 15, 12, 3])[0]
    items = [_item(rng, n, importer, country, version) for n in range(1, rng.randint(1, 4) + 1)]
    values = [item["itemTributo"]["valorMercadoria"] for item in items]
    fob_usd = _money(sum(v["valorMercadoria"] for v in values))
    freight_usd = _money(sum(v["valorFreteRateado"] for v in values))
    insurance_usd = _money(sum(v["valorSeguroRateado"] for v in values))
    totals = []
    for position, (code, name, _) in enumerate(_TAXES):
        due = _money(
            sum(i["itemTributo"]["calculosTributos"][position]["valorDevido"] for i in items)
        )
        totals.append(
            {
                "imposto": _code(code, name),
                "valorCalculado": due,
                "valorAReduzir": 0,
                "valorSuspenso": 0,
                "valorDevido": due,
                "impostoARecolher": due,
            }
        )
    fee = 154.23 + 61.69 * (len(items) - 1)  # Taxa Siscomex style: per declaration and item
    history = [
        {
            "numeroDuimp": numero,
            "versaoDuimp": 1,
            "evento": "REGISTRO",
            "dataHora": _iso(registered),
        }
    ]
    history.append(
        {
            "numeroDuimp": numero,
            "versaoDuimp": 1,
            "evento": "SELECAO_CANAL",
            "dataHora": _iso(registered + timedelta(minutes=2)),
        }
    )
    for later in range(2, version + 1):
        history.append(
            {
                "numeroDuimp": numero,
                "versaoDuimp": later,
                "evento": "RETIFICACAO",
                "dataHora": _iso(registered + timedelta(hours=20 * (later - 1))),
            }
        )
    bank = rng.choice([("001", "Banco do Brasil"), ("104", "Caixa"), ("237", "Bradesco")])
    payments = [
        {
            "versaoDuimpPagamento": "1",
            "banco": bank[0],
            "agencia": f"{rng.randint(1, 9999):04d}",
            "conta": f"{rng.randint(10000, 999999)}-{rng.randint(0, 9)}",
            "codigoReceita": receita,
            "descricaoReceita": name,
            "valorTributo": total["valorDevido"],
            "dataHoraPagamento": _iso(registered - timedelta(minutes=1)),
        }
        for (_, name, receita), total in zip(_TAXES, totals, strict=True)
        if total["valorDevido"]
    ]
    return {
        "numeroDeclaracao": numero,
        "versaoDeclaracao": str(version),
        "situacaoDeclaracao": "REGISTRADA" if version == 1 else "RETIFICADA",
        "versaoDeclaracaoVigente": str(in_force),
        "dataHoraCriacao": _iso(created),
        "dataHoraRegistro": _iso(registered),
        "dataHoraRegistroVersaoVigente": _iso(rectified),
        "tipoImportador": "CNPJ",
        "niImportador": int(cnpj),
        "nomeImportador": company,
        "ufImportador": uf,
        "cpfResponsavel": _cpf(rng),
        "canalSelecao": channel,
        "dadosCarga": {
            "uaLocalizacaoCarga": ua,
            "ufLocalizacaoCarga": ua_uf,
            "uaAnaliseFiscal": ua,
            "ufAnaliseFiscal": ua_uf,
            "uaEntradaCarga": ua,
            "ufEntradaCarga": ua_uf,
            "codRecintoLocalizacaoCarga": recinto,
            "identificacaoCarga": f"{ua_uf}{rng.randint(10**9, 10**10 - 1)}",
            "viaTransporte": via,
            "tipoConhecimento": doc_type,
            "descTipoConhecimento": doc_desc,
            "paisProcedencia": country,
            "dataChegada": _iso(arrival),
            "pesoLiquido": _money(
                sum(i["itemTributo"]["dadosMercadoria"]["pesoLiquido"] for i in items)
            ),
            "moedaFreteTotal": _CURRENCY_USD,
            "valorFreteTotalMoedaUtiliza": freight_usd,
            "valorFreteTotalEmReal": _money(freight_usd * _USD_BRL),
            "valorAFRMMDevido": _money(freight_usd * _USD_BRL * 0.08) if via == "01" else 0,
            "valorAFRMMPago": _money(freight_usd * _USD_BRL * 0.08) if via == "01" else 0,
            "indicadorAFRMMQuitado": 1 if via == "01" else 0,
            "moedaSeguro": _CURRENCY_USD,
            "valorSeguroMoedaUtilizada": insurance_usd,
            "valorSeguroEmReal": _money(insurance_usd * _USD_BRL),
            "numeroRUC": f"{found['year']}BR{cnpj[:8]}{rng.randint(10**8, 10**9 - 1)}",
        },
        "documentosInstrutivoDespacho": [
            {
                "tipo": _code("01", "Fatura comercial"),
                "palavrasChave": [{"codigo": 1, "valor": f"INV-{rng.randint(1000, 99999)}"}],
            }
        ],
        "processosVinculados": [
            {
                "tipo": _code("LPCO", "Licenças, Permissões, Certificados e Outros"),
                "numeroProcesso": f"I{found['year']}{rng.randint(10**8, 10**9 - 1)}",
            }
        ],
        "docDeclaracoesExportacaoEstrangeira": [
            {
                "numeroDeclaracao": f"{country}{rng.randint(10**8, 10**9 - 1)}",
                "faixaItemInicial": "1",
                "faixaItemFinal": str(len(items)),
            }
        ],
        "itens": items,
        "valorTotalMercadoriaLocalEmbarque": {
            "valorTotalMercadoriaLocalEmbarqueDolar": fob_usd,
            "valorTotalMercadoriaLocalEmbarqueReal": _money(fob_usd * _USD_BRL),
            "valorTotalMercadoriaLocalDescargaReal": _money(
                (fob_usd + freight_usd + insurance_usd) * _USD_BRL
            ),
        },
        "dadosTributos": {
            "indicadorCumprimentoICMS": "PENDENTE",
            "tributosCalculados": totals,
            "quantidadeAdicoes": len(items),
            "taxaUtilizacao": _money(fee),
        },
        "pagamentosDebitoConta": payments,
        "itensHistorico": history,
    }
